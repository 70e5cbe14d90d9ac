"""Hostile and unlucky input through the real command line: damaged model and data files,
wrong dtypes, malformed YAML, bad flags. Each ends in one error line and exit code 2, never a
traceback or a hang."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyNet, blobs
from typer.testing import CliRunner

from autotune.cli import app

SECONDS = 30  # per case: far more than any takes; a hang fails instead of blocking the suite


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    def give_up(signum: int, frame: object) -> None:
        raise TimeoutError(f"no answer in {SECONDS} s")

    before = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, before)


def _scripted(folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / "model.ts"
    torch.jit.save(torch.jit.script(TinyNet().eval()), str(path))
    return path


def _program(folder: Path) -> Path:
    torch.manual_seed(0)
    shapes = ({0: torch.export.Dim.AUTO},)
    program = torch.export.export(TinyNet().eval(), (torch.randn(4, 8),), dynamic_shapes=shapes)
    path = folder / "model.pt2"
    torch.export.save(program, path)
    return path


def _tensors(folder: Path, **changes: object) -> Path:
    x, y = blobs()
    arrays: dict[str, object] = {"x_train": x[:160], "y_train": y[:160], "x_val": x[160:]}
    arrays["y_val"] = y[160:]
    arrays.update(changes)
    path = folder / "data.pt"
    torch.save(arrays, path)
    return path


def _truncated(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _corrupted(path: Path) -> Path:
    """Bytes overwritten inside every entry of a zip archive (headers kept)."""
    raw = bytearray(path.read_bytes())
    for info in zipfile.ZipFile(io.BytesIO(bytes(raw))).infolist():
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        for i in range(start, min(start + info.compress_size, len(raw)), 7):
            raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    return path


def _file(folder: Path, name: str, content: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _npz(folder: Path, **arrays: np.ndarray) -> Path:
    path = folder / "data.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


x, y = blobs()
Case = Callable[[Path], list[str]]


def _model(make: Callable[[Path], Path]) -> Case:
    return lambda d: ["--model", str(make(d)), "--data", str(_tensors(d))]


def _data(make: Callable[[Path], Path]) -> Case:
    return lambda d: ["--model", str(_scripted(d)), "--data", str(make(d))]


def _flags(*flags: str) -> Case:
    return lambda d: ["--model", str(_scripted(d)), "--data", str(_tensors(d)), *flags]


def _space(text: str) -> Case:
    return lambda d: [*_flags()(d), "--space", str(_file(d, "space.yaml", text))]


CASES: dict[str, Case] = {
    "truncated state_dict": _model(lambda d: _truncated(_file(d, "m.pt", _saved(TinyNet())))),
    "random bytes": _model(lambda d: _file(d, "m.pt", bytes(range(256)) * 8)),
    "empty model file": _model(lambda d: _file(d, "m.pt", b"")),
    "truncated TorchScript": _model(lambda d: _truncated(_scripted(d))),
    "truncated .pt2": _model(lambda d: _truncated(_program(d))),
    "corrupted .pt2": _model(lambda d: _corrupted(_program(d))),
    "truncated data": _data(lambda d: _truncated(_tensors(d))),
    "garbage .npz": _data(lambda d: _file(d, "data.npz", b"PK\x03\x04garbage")),
    "string features": _data(
        lambda d: _npz(d, x_train=np.array([["a"] * 8] * 4), y_train=np.zeros(4))
    ),
    "fractional labels": _data(lambda d: _tensors(d, y_train=torch.rand(160))),
    "complex features": _data(lambda d: _tensors(d, x_train=x[:160].to(torch.complex64))),
    "labels as text": _data(
        lambda d: _npz(d, x_train=x[:4].numpy(), y_train=np.array(list("abcd")))
    ),
    "ragged csv": _data(lambda d: _file(d, "d.csv", "a,b,target\n1,2,0\n3\n4,5,6,1\n")),
    "text feature column": _data(lambda d: _file(d, "d.csv", "a,b,target\nx,2,0\ny,3,1\n" * 5)),
    "malformed YAML": _space("lr: [1, 2\n"),
    "YAML python tag": _space("lr: !!python/object/apply:os.system ['true']\n"),
    "YAML list": _space("- lr\n- dropout\n"),
    "unknown space key": _space("learning_rate: 0.1\n"),
    "negative lr range": _space("lr: {low: -0.1, high: 0.1}\n"),
    "zero lr": _space("lr: 0\n"),
    "--trials -1": _flags("--trials", "-1"),
    "--trials 0": _flags("--trials", "0"),
    "--trials abc": _flags("--trials", "abc"),
    "--metric f1": _flags("--metric", "f1"),
    "--pruner x": _flags("--pruner", "x"),
    "--max-params 2.0": _flags("--max-params", "2.0"),
    "--max-params abc": _flags("--max-params", "abc"),
    "--timeout 0": _flags("--timeout", "0"),
    "--epochs 0": _flags("--epochs", "0"),
    "--val-fraction 1.5": _flags("--val-fraction", "1.5"),
    "--pareto size": _flags("--pareto", "size"),
    "--device tpu": _flags("--device", "tpu"),
    "--threads 0": _flags("--threads", "0"),
    "--unknown-flag": _flags("--unknown-flag"),
}


def _saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj.state_dict() if isinstance(obj, torch.nn.Module) else obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_code_2(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["search", *CASES[case](tmp_path), "--trials", "1", "--out", str(tmp_path / "out")]
    if case.startswith("--trials"):
        args = args[:-4] + args[-2:]  # the case's own --trials
    result = CliRunner().invoke(app, args)
    output = result.output
    assert result.exit_code == 2, f"{case}: exit {result.exit_code}\n{output}"
    assert "Traceback" not in output, output
    if "Usage:" in output:
        return  # an unknown flag or a value of the wrong type: the argument parser's own message
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert not (tmp_path / "out" / "study.journal").exists()


@pytest.mark.slow  # a fresh interpreter imports torch: seconds
def test_the_installed_command_prints_one_line_for_a_damaged_model(tmp_path: Path) -> None:
    model = _truncated(_program(tmp_path))
    data = _tensors(tmp_path)
    command = [sys.executable, "-m", "autotune.cli", "search", "--model", str(model)]
    done = subprocess.run(
        [*command, "--data", str(data), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error:") and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr + done.stdout
