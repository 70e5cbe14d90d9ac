"""GPU check: the demo search (vision space: SHAP analysis, structural pruning) on CUDA, and
the training loop on CUDA against the CPU.

For sessions with an accelerator. Prints a Markdown section for BENCHMARKS.md; needs no
download (the demo builds from scikit-learn's bundled digits).

Run: python bench/gpu_check.py [--trials 10] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import torch
from _shared import emit, time_demo_fit
from rich.console import Console

from autotune import search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--write", type=Path, help="append the result to this Markdown file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")
    torch.set_num_threads(1)
    name = torch.cuda.get_device_name(0)
    time_demo_fit("cuda", 2)  # warm-up: CUDA context and kernels
    cpu_s, cpu_acc = time_demo_fit("cpu")
    gpu_s, gpu_acc = time_demo_fit("cuda")
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = search(
            "demo",
            "demo",
            space="vision",
            trials=args.trials,
            out=out,
            device="cuda",
            console=Console(file=io.StringIO()),
        )
        search_s = time.perf_counter() - start
        best = result.best_config or {}
        trials = result.study.trials
        memory = [
            t.user_attrs["cuda_memory_mb"] for t in trials if "cuda_memory_mb" in t.user_attrs
        ]
        precision = sorted(
            {t.user_attrs["precision"] for t in trials if "precision" in t.user_attrs}
        )
    metrics = best.get("metrics", {})
    structure = best.get("structure", {})
    params = structure.get("params", {"model": 0, "source": 1})
    latency = structure.get("latency_ms", {})
    emit(
        [
            f"### GPU check ({time.strftime('%Y-%m-%d')}, {name})",
            "",
            f"Command: `python bench/gpu_check.py --trials {args.trials}`",
            "",
            "| run | seconds | best val accuracy |",
            "| --- | ---: | ---: |",
            f"| fine_tune, demo CNN, 20 epochs, CPU 1 thread | {cpu_s:.2f} | {cpu_acc:.4f} |",
            f"| fine_tune, demo CNN, 20 epochs, CUDA | {gpu_s:.2f} | {gpu_acc:.4f} |",
            f"| demo search, vision space, {args.trials} trials, CUDA (incl. analysis, export) | "
            f"{search_s:.2f} | "
            f"{metrics.get('val_accuracy', float('nan')):.4f} |",
            "",
            f"Exported from {best.get('fit', {}).get('device')}; gain over baseline "
            f"{metrics.get('gain', float('nan')):+.4f}; "
            f"{params['model'] / params['source']:.0%} of the source's parameters; "
            f"latency (32 samples, CUDA) {latency.get('model')} ms vs {latency.get('source')} ms.",
            "",
            f"Trials trained with: {', '.join(precision)}. GPU memory allocated after each trial "
            f"(MiB): {', '.join(f'{m:.0f}' for m in memory)}{_drift(memory)}",
        ],
        args.write,
    )


def _drift(memory: list[float]) -> str:
    """The memory after the last trial against after the fifth (the target: within 5%)."""
    if len(memory) <= 5 or memory[4] <= 0:
        return "."
    return f"; after the last against after the fifth: {memory[-1] / memory[4]:.3f}x."


if __name__ == "__main__":
    main()
