"""GPU check: the demo search on CUDA, and the training loop on CUDA against the CPU.

For sessions with an accelerator. Prints a Markdown section for BENCHMARKS.md; needs no
download (the demo builds from scikit-learn's bundled digits).

Run: python bench/gpu_check.py [--trials 10]
"""

from __future__ import annotations

import argparse
import copy
import io
import tempfile
import time

import torch
from rich.console import Console

from autotune import search
from autotune.data import load_data
from autotune.models import load_model
from autotune.space import TrialConfig
from autotune.train import fine_tune


def time_fit(device: str, epochs: int = 20) -> tuple[float, float]:
    model = copy.deepcopy(load_model("demo").module).to(device)
    data = load_data("demo").to(device)
    start = time.perf_counter()
    result = fine_tune(model, data, TrialConfig(lr=3e-3), max_epochs=epochs, patience=epochs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, result.best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")
    torch.set_num_threads(1)
    name = torch.cuda.get_device_name(0)
    time_fit("cuda", 2)  # warm-up: CUDA context and kernels
    cpu_s, cpu_acc = time_fit("cpu")
    gpu_s, gpu_acc = time_fit("cuda")
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = search(
            "demo",
            "demo",
            trials=args.trials,
            out=out,
            device="cuda",
            console=Console(file=io.StringIO()),
        )
        search_s = time.perf_counter() - start
        best = result.best_config or {}
    metrics = best.get("metrics", {})
    print(f"### GPU check ({time.strftime('%Y-%m-%d')}, {name})\n")
    print(f"Command: `python bench/gpu_check.py --trials {args.trials}`\n")
    print("| run | seconds | best val accuracy |\n| --- | ---: | ---: |")
    print(f"| fine_tune, demo CNN, 20 epochs, CPU 1 thread | {cpu_s:.2f} | {cpu_acc:.4f} |")
    print(f"| fine_tune, demo CNN, 20 epochs, CUDA | {gpu_s:.2f} | {gpu_acc:.4f} |")
    print(
        f"| demo search, {args.trials} trials, CUDA (incl. export) | {search_s:.2f} | "
        f"{metrics.get('val_accuracy', float('nan')):.4f} |"
    )
    print(
        f"\nexported on {best.get('fit', {}).get('device')}; "
        f"gain over baseline {metrics.get('gain', float('nan')):+.4f}"
    )


if __name__ == "__main__":
    main()
