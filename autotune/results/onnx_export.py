"""``--export onnx``: the exported model as ``model.onnx`` (the same module ``model.pt2`` holds,
with a dynamic batch dimension), checked in a clean interpreter with onnxruntime against the
PyTorch output, and timed there beside the ``.pt2`` program (``results.onnx_check``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autotune.errors import AutotuneError, first_line
from autotune.results.bundle_files import is_written, not_written
from autotune.results.deploy import deployable, exporter_quiet, save_file

TOLERANCE = 1e-4
"""Largest difference from the PyTorch output that the summary calls a match."""
CHECK_SECONDS = 1.0
"""Wall time of the interleaved onnxruntime / PyTorch timing."""
CHECK_TIMEOUT_S = 300
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
NEEDS = {"onnx": ("onnx", "onnxruntime", "onnxscript")}
"""What each ``--export`` format needs installed: the ``autotune[onnx]`` extra."""


def export_formats(export: tuple[str, ...] | str) -> tuple[str, ...]:
    """``--export`` (``SearchSettings.export``) as a tuple of formats; refused before any work
    when one is unknown or its packages are missing: a search of hours should not end without
    the file asked for."""
    import importlib.util

    formats = (export,) if isinstance(export, str) else tuple(export)
    for name in formats:
        if name not in NEEDS:
            raise AutotuneError(f"--export must be one of {list(NEEDS)}, got {name!r}")
        missing = [p for p in NEEDS[name] if importlib.util.find_spec(p) is None]
        if missing:
            raise AutotuneError(
                f"--export {name} needs {', '.join(missing)}: pip install 'autotune[{name}]'"
            )
    return tuple(dict.fromkeys(formats))


def save_onnx(
    model: nn.Module,
    example: torch.Tensor,
    folder: Path,
    preprocessing: dict[str, Any] | None = None,
    columns: tuple[list[int], torch.Tensor] | None = None,
    threads: int = 1,
) -> tuple[str, dict[str, Any] | None]:
    """Write ``folder/model.onnx`` and check it: how to load it (else why it was not written),
    and what the check found (None when not written).

    ``example`` is a batch of the model's inputs, as many as the check runs on (the latency
    batch); ``preprocessing`` and ``columns`` as for ``deploy.save_model``: the ONNX model takes
    what ``model.pt2`` takes."""
    module, inputs, how = deployable(model, example, preprocessing, columns)
    shape = "x".join(str(n) for n in inputs.shape[1:])
    how = (
        "onnxruntime.InferenceSession('model.onnx').run(None, {'input': x})[0]  # x: float32 "
        f"numpy, any batch size x {shape}" + how.partition("# needs only torch")[2]
    )
    path = folder / "model.onnx"
    how = save_file(path, lambda f: _write(module, inputs[:2], f), how, "torch.onnx.export")
    if not is_written(how):
        return how, None
    try:
        found = _check(module, inputs, path, folder / "model.pt2", threads)
    except Exception as e:
        path.unlink(missing_ok=True)
        return not_written(f"the onnxruntime check failed ({first_line(e)[:200]})"), None
    return how, found


def _write(module: nn.Module, example: torch.Tensor, f: Any) -> None:
    """Export ``module`` with torch's dynamo-based exporter (``torch.export`` underneath, as for
    ``model.pt2``) with a free batch size, and write the ONNX model to ``f``."""
    try:
        # The exporter prints its steps and warns about things the user cannot act on.
        with exporter_quiet():
            program = torch.onnx.export(
                module,
                (example,),
                input_names=["input"],
                output_names=["output"],
                dynamic_shapes=({0: torch.export.Dim.AUTO},),
                dynamo=True,
                verbose=False,
            )
    except Exception as e:
        # Its own message says which of its steps failed; the cause says why.
        cause: BaseException = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        text = _ANSI.sub("", first_line(cause))  # it colours its messages for a terminal
        if isinstance(module, torch.jit.ScriptModule):
            text = "a TorchScript model: torch.export does not take it"
        raise RuntimeError(text) from None
    assert program is not None  # dynamo=True returns the program
    f.write(program.model_proto.SerializeToString())


def _check(
    module: nn.Module, inputs: torch.Tensor, onnx_path: Path, program: Path, threads: int
) -> dict[str, Any]:
    """Run ``results/onnx_check.py`` in a clean interpreter on ``inputs``: the ONNX output's
    largest difference from ``module``'s, and both latencies on the CPU."""
    with torch.no_grad():
        expected = module(inputs).float().numpy()
    with tempfile.TemporaryDirectory() as tmp:
        check = Path(tmp) / "check.npz"
        np.savez(check, inputs=inputs.float().numpy(), expected=expected.astype(np.float64))
        script = Path(__file__).with_name("onnx_check.py")
        pt2 = str(program) if program.is_file() else "-"
        args = [str(onnx_path), pt2, str(check), str(threads), str(CHECK_SECONDS)]
        done = subprocess.run(
            [sys.executable, "-I", str(script), *args],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
        )
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"exit code {done.returncode}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    onnx_ms, torch_ms = found["onnxruntime_ms"], found["pytorch_ms"]
    return {
        "max_abs_diff": float(f"{found['max_abs_diff']:.3g}"),
        "matches": found["max_abs_diff"] <= TOLERANCE,
        "tolerance": TOLERANCE,
        "checked_samples": found["samples"],
        "onnxruntime_version": found["onnxruntime"],
        "latency_ms": {
            "onnxruntime": round(onnx_ms, 3),
            "pytorch": None if torch_ms is None else round(torch_ms, 3),
            "batch": found["samples"],
            "device": "cpu",
            "threads": threads,
        },
    }


def onnx_line(files: dict[str, str], onnx: dict[str, Any] | None) -> str | None:
    """The summary's line on the ONNX check, None when no ONNX model was asked for or written."""
    if onnx is None or "model.onnx" not in files:
        return None
    diff, latency = onnx["max_abs_diff"], onnx["latency_ms"]
    verdict = "matches" if onnx["matches"] else f"DIFFERS (over {onnx['tolerance']:g}) from"
    line = f"model.onnx {verdict} PyTorch (max abs difference {diff:.2g}); onnxruntime "
    line += f"{latency['onnxruntime']:.3g} ms per batch of {latency['batch']} on the CPU"
    if latency["pytorch"] is not None:
        line += f", PyTorch {latency['pytorch']:.3g} ms"
    return line
