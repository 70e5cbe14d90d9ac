"""A crafted ``.pt2`` runs no code without --trust-model: one archive per way that
``torch.export.load`` would run code from the file."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.export.pt2_archive._package import PT2ArchiveWriter
from typer.testing import CliRunner

from autotune.cli import app
from autotune.errors import ModelLoadError
from autotune.load.models import load_model
from autotune.load.trust import _entry_hazards, program_hazards
from autotune.search.study import load_study

Entries = dict[str, bytes]


class Payload:
    """Unpickling it creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _program(path: Path, dynamic: bool = True) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 3)).eval()
    shapes = ({0: torch.export.Dim.AUTO},) if dynamic else None
    program = torch.export.export(model, (torch.randn(2, 8),), dynamic_shapes=shapes)
    torch.export.save(program, path)
    return path


def _entries(path: Path) -> Entries:
    archive = zipfile.ZipFile(path)
    root = archive.namelist()[0].split("/")[0] + "/"
    return {name[len(root) :]: archive.read(name) for name in archive.namelist()}


def _write(path: Path, entries: Entries) -> Path:
    with PT2ArchiveWriter(str(path)) as writer:
        for name, data in entries.items():
            if name not in (".data/version", ".data/serialization_id", "byteorder"):
                writer.write_bytes(name, data)
    return path


def _saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _sample_inputs(e: Entries, marker: Path) -> None:
    # torch reads them with weights_only=True, then retries with full pickle.
    e["data/sample_inputs/model.pt"] = _saved(Payload(marker))


def _pickled_weight(e: Entries, marker: Path) -> None:
    config = json.loads(e["data/weights/model_weights_config.json"])
    meta = config["config"]["0.weight"]
    meta["use_pickle"] = True
    e[f"data/weights/{meta['path_name']}"] = _saved(Payload(marker))
    e["data/weights/model_weights_config.json"] = json.dumps(config).encode()


def _opaque_constant(e: Entries, marker: Path) -> None:
    config = json.loads(e["data/constants/model_constants_config.json"])
    config["config"]["c"] = {
        "path_name": "opaque_obj_0",
        "is_param": False,
        "use_pickle": True,
        "tensor_meta": None,
    }
    e["data/constants/opaque_obj_0"] = pickle.dumps(Payload(marker))
    e["data/constants/model_constants_config.json"] = json.dumps(config).encode()


def _legacy_weights(e: Entries, marker: Path) -> None:
    e["data/weights/model.pt"] = _saved(Payload(marker))


def _shape_expression(e: Entries, marker: Path) -> None:
    # torch passes every expr_str to sympy.sympify, which evaluates it with Python's eval.
    program = json.loads(e["models/model.json"])
    size = program["graph_module"]["graph"]["tensor_values"]["input"]["sizes"][0]["as_expr"]
    code = f"open({str(marker)!r}, 'w').close()"
    size["expr_str"] = f"__import__('builtins').exec({code!r}) or {size['expr_str']}"
    e["models/model.json"] = json.dumps(program).encode()


CRAFTED: dict[str, Callable[[Entries, Path], None]] = {
    "sample inputs": _sample_inputs,
    "weight marked use_pickle": _pickled_weight,
    "opaque constant": _opaque_constant,
    "legacy weights file": _legacy_weights,
    "shape expression": _shape_expression,
}


def _loads_opaque_constants() -> bool:
    """Whether this torch's ``torch.export.load`` unpickles ``opaque_obj_*`` constants (newer
    versions do; older ones reject the entry as an unsupported constant type)."""
    from torch.export.pt2_archive import constants

    return hasattr(constants, "OPAQUE_OBJ_FILENAME_PREFIX")


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_a_crafted_program_runs_no_code_without_trust(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "ran"
    entries = _entries(_program(tmp_path / "ok.pt2"))
    CRAFTED[kind](entries, marker)
    crafted = _write(tmp_path / "crafted.pt2", entries)

    with pytest.raises(ModelLoadError, match="--trust-model") as info:
        load_model(crafted)
    assert not marker.exists()
    assert "\n" not in str(info.value) and "torch.export archive with" in str(info.value)

    # The archive is a real exploit: torch's own loader runs the payload.
    if kind == "opaque constant" and not _loads_opaque_constants():
        pytest.skip(f"torch {torch.__version__} does not unpickle opaque constants (refused above)")
    caplog.set_level(logging.CRITICAL)
    with contextlib.suppress(Exception):  # most payloads break the entry they replaced
        load_model(crafted, trust_model=True)
    assert marker.exists()


def test_archives_with_native_code_or_stray_entries_are_refused(tmp_path: Path) -> None:
    entries = _entries(_program(tmp_path / "ok.pt2"))
    with_library = {**entries, "data/aotinductor/model/model.so": b"\x7fELF"}
    with pytest.raises(ModelLoadError, match="AOTInductor"):
        load_model(_write(tmp_path / "aoti.pt2", with_library))
    with_unknown = {**entries, "data/elsewhere/x.pkl": b"\x80\x04N."}
    with pytest.raises(ModelLoadError, match="cannot check"):
        load_model(_write(tmp_path / "unknown.pt2", with_unknown))


def test_the_command_line_refuses_a_crafted_program_in_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    entries = _entries(_program(tmp_path / "ok.pt2"))
    _sample_inputs(entries, marker)
    crafted = _write(tmp_path / "crafted.pt2", entries)
    for command in ("search", "analyze"):
        result = CliRunner().invoke(
            app, [command, "--model", str(crafted), "--data", "sklearn:wine"]
        )
        assert result.exit_code == 2, result.output
        assert "--trust-model" in result.output and "Traceback" not in result.output
        assert not marker.exists()


@pytest.mark.parametrize("dynamic", [True, False])
def test_a_legitimate_program_loads_and_runs(tmp_path: Path, dynamic: bool) -> None:
    loaded = load_model(_program(tmp_path / "model.pt2", dynamic))
    assert loaded.format == "export"
    assert loaded.module(torch.randn(2, 8)).shape == (2, 3)


def test_a_program_traced_with_a_fixed_batch_size_is_refused_before_the_search(
    tmp_path: Path, tensors_file: Path
) -> None:
    fixed = _program(tmp_path / "fixed.pt2", dynamic=False)
    args = ["search", "--model", str(fixed), "--data", str(tensors_file), "--trials", "1"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "fixed batch size" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "study.journal").exists()


def _zip(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    """An archive with exactly these entries, in this order (repeats and all)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about a repeated name
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return path


def _rooted(path: Path) -> list[tuple[str, bytes]]:
    archive = zipfile.ZipFile(path)
    return [(name, archive.read(name)) for name in archive.namelist()]


def test_a_repeated_entry_runs_no_code_whichever_copy_a_reader_picks(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    entries = _rooted(_program(tmp_path / "ok.pt2"))
    target = next(i for i, e in enumerate(entries) if e[0].endswith("sample_inputs/model.pt"))
    name, clean = entries.pop(target)
    payload = _saved(Payload(marker))
    exploits = []
    for place in range(1, len(entries) + 2):
        # The payload first, the clean copy later: Python's zipfile reads the last copy of a
        # name; which one torch's reader (miniz, a binary search over sorted names) reads
        # depends on where the copies lie.
        order = [(name, payload), *entries[: place - 1], (name, clean), *entries[place - 1 :]]
        crafted = _zip(tmp_path / f"crafted{place}.pt2", order)
        with pytest.raises(ModelLoadError, match="--trust-model") as info:
            load_model(crafted)
        assert "two entries named" in str(info.value) and not marker.exists()
        torch_reads = torch._C.PyTorchFileReader(str(crafted)).get_record(name.split("/", 1)[1])
        if torch_reads == payload and zipfile.ZipFile(crafted).read(name) == clean:
            exploits.append(crafted)

    # Real exploits: where zipfile sees the clean copy, torch's own loader runs the payload.
    assert exploits
    with contextlib.suppress(Exception):
        load_model(exploits[0], trust_model=True)
    assert marker.exists()


@pytest.mark.parametrize(
    "rename",
    [
        # miniz finds names case-insensitively: one of the two would be read for the other.
        lambda n: n.replace("sample_inputs", "SAMPLE_INPUTS"),
        lambda n: n.replace("data/", "data/./"),
        lambda n: n.replace("data/", "data//"),
        lambda n: n.replace("data/", "data\\"),
    ],
    ids=["case", "dot", "empty", "backslash"],
)
def test_names_that_readers_could_take_for_another_are_refused(
    tmp_path: Path, rename: Callable[[str], str]
) -> None:
    entries = _rooted(_program(tmp_path / "ok.pt2"))
    name, data = next(e for e in entries if e[0].endswith("sample_inputs/model.pt"))
    crafted = _zip(tmp_path / "crafted.pt2", [*entries, (rename(name), data)])
    with pytest.raises(ModelLoadError, match="--trust-model"):
        load_model(crafted)


def test_the_bytes_checked_are_the_bytes_torch_reads(tmp_path: Path) -> None:
    entries = _rooted(_program(tmp_path / "ok.pt2"))
    assert program_hazards(_zip(tmp_path / "plain.pt2", entries).read_bytes()) == []
    # A stray copy of an entry placed after the real one: the readers now disagree, and which
    # one is "the" entry is not for autotune to guess.
    name, _ = next(e for e in entries if e[0].endswith("models/model.json"))
    crafted = _zip(tmp_path / "crafted.pt2", [*entries, (name, b"{}")]).read_bytes()
    hazards = program_hazards(crafted)
    assert hazards and "two entries named" in hazards[0]


@pytest.mark.parametrize(
    "expression",
    [
        "Symbol('s77') + 0*9**9**9**9",
        "s0 + PowByNatural(9, PowByNatural(9, 9))",
        "s0 + (9**64)**64**64",
        "s0 + LShift(1, 10**18)",
        "s0 + 1 << 99999999999",
        "s0 + " + "9" * 30,
        "s0 + " + " + ".join(["s0"] * 2000),
    ],
)
def test_a_shape_expression_too_costly_to_evaluate_is_refused(
    expression: str, tmp_path: Path
) -> None:
    entries = _entries(_program(tmp_path / "ok.pt2"))
    program = json.loads(entries["models/model.json"])
    size = program["graph_module"]["graph"]["tensor_values"]["input"]["sizes"][0]["as_expr"]
    size["expr_str"] = expression
    entries["models/model.json"] = json.dumps(program).encode()
    crafted = _write(tmp_path / "crafted.pt2", entries)
    # Checked without evaluating it (evaluating the first one never ends).
    hazards = program_hazards(crafted.read_bytes())
    assert hazards and "shape expression" in hazards[0]
    with pytest.raises(ModelLoadError, match="--trust-model"):
        load_model(crafted)


@pytest.mark.parametrize("expression", ["s0", "2*s0 + 1", "Max(2, s0)", "FloorDiv(s0**2, 4)"])
def test_ordinary_shape_expressions_pass(expression: str) -> None:
    entries = {"models/model.json": json.dumps({"x": {"expr_str": expression}}).encode()}
    assert [h for e, raw in entries.items() for h in _entry_hazards(e, lambda r=raw: r)] == []


NET = (
    "from torch import nn\n\n\ndef Net(num_classes=3):\n    return nn.Sequential(nn.Linear(8, 3))\n"
)


def _handed_over_study(tmp_path: Path, tensors_file: Path, **model: object) -> Path:
    """A study folder as someone else could hand it over: a finished search whose stored
    model record was rewritten to ask for trust and to import a Python file."""
    out = tmp_path / "out"
    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 1.0e-3, high: 1.0e-2, log: true}\nfit: {max_epochs: 1}\n")
    torch.manual_seed(0)
    torch.save(nn.Sequential(nn.Linear(8, 3)).state_dict(), tmp_path / "weights.pt")
    (tmp_path / "net.py").write_text(NET)
    args = ["search", "--model", str(tmp_path / "weights.pt"), "--arch", f"{tmp_path}/net.py:Net"]
    args += ["--data", str(tensors_file), "--trials", "1", "--space", str(space)]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--code", str(tmp_path / "net.py")])
    assert result.exit_code == 0, result.output
    study = load_study(None, out)
    record = study.user_attrs["autotune"]
    record["model"].update(model)
    study.set_user_attr("autotune", record)
    return out


def test_export_takes_no_trust_from_the_study_folder(tmp_path: Path, tensors_file: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\n{NET}")
    out = _handed_over_study(
        tmp_path, tensors_file, trust_model=True, code=str(evil), arch=f"{evil}:Net"
    )
    refused = CliRunner().invoke(app, ["export", "--out", str(out)])
    assert refused.exit_code == 2, refused.output
    assert not marker.exists()
    line = refused.output.strip()
    assert "\n" not in line and "--code" in line and str(evil) in line, line

    # Passing the trust again is the user's own choice, and then it runs.
    trusted = CliRunner().invoke(app, ["export", "--out", str(out), "--code", str(evil)])
    assert trusted.exit_code == 0, trusted.output
    assert marker.exists()
