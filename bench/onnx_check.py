"""ONNX export on every shipped search space: the exported model.onnx against PyTorch.

For each space in ``search_spaces/`` a short search on its demo task (the demo CNN on rotated
digits for ``default`` and ``vision``; the breast_cancer MLP of ``bench/peer_tasks.py``, whose
export may drop input columns, for ``tabular``) exports with ``--export onnx``. Reported: the
largest difference the export's own check found (a clean process, onnxruntime on a batch of
validation samples), a second check here (onnxruntime against the ``.pt2`` program on 64 random
inputs of another batch size), and the CPU latency of onnxruntime and of the ``.pt2`` program
timed alternately in that clean process (``onnx.latency_ms`` in ``config.yaml``).

Run: python bench/onnx_check.py [--trials 6] [--epochs 5] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

BENCH = Path(__file__).parent
sys.path.insert(0, str(BENCH))

from _shared import emit  # noqa: E402

import autotune  # noqa: E402
from autotune.load.job import ModelSpec  # noqa: E402
from autotune.results.onnx_export import TOLERANCE  # noqa: E402

SPACES = sorted(p.stem for p in (BENCH.parent / "search_spaces").glob("*.yaml"))


def task(space: str, folder: Path) -> tuple[object, str, str]:
    """The model and data each space is shown on, and the task's name."""
    if space != "tabular":
        return "demo", "demo", "demo CNN, rotated digits"
    from peer_tasks import build_tabular

    built = build_tabular(folder)
    spec = ModelSpec(str(built["model"]), str(built["arch"]))
    return spec, str(built["data"]), "tabular MLP, shifted breast_cancer"


def second_check(best: Path, shape: list[int]) -> float:
    """onnxruntime against the ``.pt2`` program on 64 random inputs: the largest difference."""
    import onnxruntime

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, *shape, generator=gen)
    session = onnxruntime.InferenceSession(str(best / "model.onnx"))
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = torch.export.load(best / "model.pt2").module()(x).numpy()
    return float(np.abs(got - expected).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for space in SPACES:
            model, data, name = task(space, Path(tmp) / "tasks")
            start = time.perf_counter()
            result = autotune.search(
                model, data, space=space, trials=args.trials, max_epochs=args.epochs,
                out=Path(tmp) / space, export="onnx", console=Console(file=io.StringIO()),
            )  # fmt: skip
            seconds = time.perf_counter() - start
            assert result.best is not None, space
            config = result.best.config
            onnx, s = config["onnx"], config["structure"]
            assert onnx is not None, config["files"]["model.onnx"]
            again = second_check(result.best.folder, config["sample_shape"]["model.pt2"])
            inputs = s["inputs"]
            columns = (
                f"{len(inputs['indices'])}/{len(inputs['indices']) + len(inputs['dropped'])}"
                if inputs
                else ""
            )
            times = onnx["latency_ms"]
            rows.append(
                f"| {space} | {name} | {config['trial']} | "
                f"{s['params']['model'] / s['params']['source']:.0%} | "
                f"{columns} | {onnx['max_abs_diff']:.2g} | {again:.2g} | "
                f"{'yes' if max(onnx['max_abs_diff'], again) <= TOLERANCE else 'NO'} | "
                f"{times['onnxruntime']:.3f} | {times['pytorch']:.3f} | "
                f"{times['pytorch'] / times['onnxruntime']:.2f}x | {seconds:.0f} |"
            )
    lines = [
        f"### ONNX export on every shipped space ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python bench/onnx_check.py --trials {args.trials} --epochs {args.epochs}`: each "
        "space's demo task searched with `--export onnx`; the export's check (a clean process, "
        f"onnxruntime on {times['batch']} validation samples against the PyTorch output), a "
        "second check (onnxruntime against the `.pt2` program on 64 random inputs), and the "
        f"CPU latency per batch of {times['batch']}, {times['threads']} thread, onnxruntime and "
        "the `.pt2` program timed alternately in that clean process.",
        "",
        "| space | task | trial | params | columns | max diff (check) | max diff (again) | "
        f"within {TOLERANCE:g} | onnxruntime ms | PyTorch ms | speed-up | search s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        *rows,
    ]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
