"""``--export onnx`` (``results/onnx_export.py``): ``model.onnx`` with a free batch size, checked
with onnxruntime in a clean process; a model that cannot be exported still gets its bundle.

The tests that export need the ``autotune[onnx]`` extra (CI installs it) and skip without it.
"""

from __future__ import annotations

import importlib.util
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TinyNet, write_cli_job
from rich.console import Console
from typer.testing import CliRunner

from autotune import search
from autotune.cli import app
from autotune.errors import AutotuneError
from autotune.load.tasks import TaskData
from autotune.results.deploy import Normalized
from autotune.results.export import ExportResult
from autotune.results.onnx_export import export_formats, save_onnx
from autotune.results.summary import summary_lines

MISSING = [p for p in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(p) is None]
needs_onnx = pytest.mark.skipif(
    bool(MISSING),
    reason=f"{', '.join(MISSING)} not installed: pip install 'autotune[onnx]' (CI installs it)",
)
SPACE = {"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "fit": {"max_epochs": 1, "patience": 1}}


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


@needs_onnx
def test_the_onnx_model_matches_pytorch_at_any_batch_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(32, 8)
    how, found = save_onnx(model, x, tmp_path)
    assert how.startswith("onnxruntime.InferenceSession"), how
    assert found is not None and found["matches"] and found["max_abs_diff"] <= 1e-4
    assert found["checked_samples"] == 32 and found["latency_ms"]["onnxruntime"] > 0
    for n in (1, 7):  # other batch sizes than the 2 it was exported with
        batch = torch.randn(n, 8)
        with torch.no_grad():
            np.testing.assert_allclose(
                _run_onnx(tmp_path / "model.onnx", batch.numpy()), model(batch).numpy(), atol=1e-4
            )


@needs_onnx
def test_the_onnx_model_selects_its_columns_and_normalises_as_the_program_does(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    model = TinyNet().eval()
    rows = torch.randn(32, 11)  # the data's 11 columns; the model kept 8 of them
    kept = [0, 2, 3, 4, 6, 7, 9, 10]
    how, found = save_onnx(model, rows[:, kept], tmp_path, columns=(kept, rows))
    assert found is not None and found["matches"], how
    assert "takes the data's 11 columns" in how
    with torch.no_grad():
        expected = model(rows[:5, kept]).numpy()
    np.testing.assert_allclose(
        _run_onnx(tmp_path / "model.onnx", rows[:5].numpy()), expected, atol=1e-4
    )

    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    conv(torch.zeros(1, 3, 6, 6))
    conv.eval()
    stats = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    images = torch.randn(32, 3, 6, 6)  # normalised model inputs
    folder = tmp_path / "images"
    folder.mkdir()
    how, found = save_onnx(conv, images, folder, preprocessing={"normalize": stats, "channels": 3})
    assert found is not None and found["matches"], how
    raw = torch.rand(4, 3, 6, 6)
    with torch.no_grad():
        expected = Normalized(conv, stats["mean"], stats["std"])(raw).numpy()
    np.testing.assert_allclose(_run_onnx(folder / "model.onnx", raw.numpy()), expected, atol=1e-4)


class DataDependent(TinyNet):
    """Control flow on the input's values: torch.export (so .pt2 and ONNX) cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out * 2 if x.sum() > 1e9 else out


def _searched(
    net: type[TinyNet], data: TaskData, out: Path, export: str | list[str]
) -> ExportResult:
    """The bundle of a one-trial search of a fresh ``net`` with ``--export`` as given."""
    torch.manual_seed(0)
    quiet = Console(file=io.StringIO())
    result = search(
        net().eval(), data, space=SPACE, trials=1, out=out, console=quiet, export=export
    )
    assert result.best is not None
    return result.best


@needs_onnx
def test_search_with_export_onnx_writes_and_records_the_checked_model(
    tmp_path: Path, tiny_data: TaskData
) -> None:
    result = _searched(TinyNet, tiny_data, tmp_path, "onnx")
    config = yaml.safe_load((result.folder / "config.yaml").read_text())
    assert config["onnx"]["max_abs_diff"] <= 1e-4 and config["onnx"]["matches"]
    assert config["onnx"]["latency_ms"]["pytorch"] > 0  # timed beside the .pt2 program
    x = tiny_data.x_val[:3]
    with torch.no_grad():
        expected = result.model(x).numpy()
    np.testing.assert_allclose(
        _run_onnx(result.folder / "model.onnx", x.numpy()), expected, atol=1e-4
    )
    lines = summary_lines(result, None)
    assert any(line.startswith("model.onnx matches PyTorch") for line in lines), lines


@needs_onnx
def test_a_model_that_cannot_be_exported_still_gets_its_bundle_and_one_line_why(
    tmp_path: Path, tiny_data: TaskData
) -> None:
    result = _searched(DataDependent, tiny_data, tmp_path, ["onnx"])
    best = result.folder
    assert {"model.pt", "config.yaml", "README.md"} <= {p.name for p in best.iterdir()}
    assert not (best / "model.onnx").exists()
    why = result.config["files"]["model.onnx"]
    assert why.startswith("not written: torch.onnx.export failed (") and "\n" not in why
    assert "\x1b" not in why  # the exporter's terminal colours are not carried over
    assert result.config["onnx"] is None
    lines = summary_lines(result, None)
    assert f"model.onnx {why}" in lines
    assert "model.onnx" in (best / "README.md").read_text()  # the card says why too


def test_an_unknown_format_or_a_missing_extra_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AutotuneError, match=r"--export must be one of \['onnx'\], got 'tflite'"):
        export_formats("tflite")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name)
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["search", "--model", "demo", "--export", "onnx", "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    # onnxruntime is named, and how to install it (the others too where they are missing).
    assert re.search(
        r"--export onnx needs [\w, ]*onnxruntime[\w, ]*: pip install 'autotune\[onnx\]'",
        result.output,
    ), result.output
    assert not out.exists()


@needs_onnx
def test_autotune_export_with_export_onnx_prints_the_check_as_the_search_does(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It printed the trial's line alone: neither the check's verdict nor a file not written.
    monkeypatch.chdir(tmp_path)
    job = write_cli_job(tmp_path, tensors_file, "lr: 1.0e-3\nfit: {max_epochs: 1, patience: 1}\n")
    searched = CliRunner().invoke(app, ["search", *job, "--trials", "1", "--out", "run"])
    assert searched.exit_code == 0, searched.output
    again = ["export", "--out", "run", "--trial", "1", "--code", "net.py", "--export", "onnx"]
    exported = CliRunner().invoke(app, [*again, "--to", "again"])
    assert exported.exit_code == 0, exported.output
    assert "\nmodel.onnx matches PyTorch (max abs difference " in exported.output, exported.output


@needs_onnx
def test_an_export_into_an_earlier_bundle_removes_the_files_it_no_longer_writes(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The earlier export's model.onnx stayed in best/ beside a model it was not made from.
    monkeypatch.chdir(tmp_path)
    job = write_cli_job(tmp_path, tensors_file, "lr: 1.0e-3\nfit: {max_epochs: 1, patience: 1}\n")
    searched = CliRunner().invoke(
        app, ["search", *job, "--trials", "1", "--out", "run", "--export", "onnx"]
    )
    assert searched.exit_code == 0, searched.output
    best = tmp_path / "run" / "best"
    assert (best / "model.onnx").is_file()
    (best / "notes.txt").write_text("the user's own file")
    (best / "model.tflite").write_bytes(b"a file autotune never wrote")
    exported = CliRunner().invoke(app, ["export", "--out", "run", "--code", "net.py"])
    assert exported.exit_code == 0, exported.output
    assert not (best / "model.onnx").exists()
    names = {p.name for p in best.iterdir()}
    assert {"model.pt", "model.pt2", "config.yaml", "README.md"} <= names
    assert {"notes.txt", "model.tflite"} <= names  # not autotune's: left as they were
