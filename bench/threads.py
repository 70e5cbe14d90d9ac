"""torch intra-op threads for the training loop: 1 against N, interleaved in one process.

Trains the demo CNN with one fixed configuration (as bench/overhead.py) and, for a larger
case, torchvision's resnet18 on 32x32 inputs for a few steps, switching
``torch.set_num_threads`` between runs.

Run: python bench/threads.py [--repeats 5] [--threads 1 2] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from _shared import emit, time_demo_fit


def demo_fit() -> float:
    return time_demo_fit(epochs=10)[0]


def resnet_steps(steps: int = 5) -> float:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(32, 3, 32, 32), torch.arange(32) % 10
    start = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    cases = {
        "demo CNN, 10 epochs (s)": demo_fit,
        "resnet18 32x32 batch 32, one step (s)": resnet_steps,
    }
    results: dict[tuple[str, int], list[float]] = {(c, t): [] for c in cases for t in args.threads}
    demo_fit()  # build the demo cache outside the timings
    for _ in range(args.repeats):
        for threads in args.threads:
            torch.set_num_threads(threads)
            for case, run in cases.items():
                results[(case, threads)].append(run())
    lines = [
        f"### torch threads on CPU ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `python bench/threads.py --repeats {args.repeats} --threads "
        f"{' '.join(map(str, args.threads))}`  ",
        f"Machine: {os.cpu_count()} cores, torch {torch.__version__}; medians of {args.repeats} "
        "interleaved runs.",
        "",
        "| case | " + " | ".join(f"{t} thread(s)" for t in args.threads) + " |",
        "| --- |" + " ---: |" * len(args.threads),
    ]
    for case in cases:
        cells = [f"{statistics.median(results[(case, t)]):.3f}" for t in args.threads]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    emit(lines, args.write)


if __name__ == "__main__":
    main()
