"""Peak memory and loader-bound time of a short search on an image folder too large to hold.

Writes a synthetic folder of JPEG images (default 20,000 of 64x64 in 10 classes: a class colour
under noise) into a temporary directory, then runs ``autotune.search`` on it with a small CNN:
fine-tuning only (learning rate and ``augment``), one epoch per trial. The folder's decoded
float32 inputs exceed the resident limit, so the data streams from disk through the loader.

Reported: the peak resident memory of the search process (VmHWM) and of the largest loader
worker (the children's ru_maxrss), what the inputs would take held as tensors, and the
loader-bound fraction of each trial (time waiting for a batch / time in the training steps).

Run: python bench/streaming.py [--images 20000] [--trials 2] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _shared import emit
from PIL import Image
from rich.console import Console
from torch import nn

from autotune import search
from autotune.load.job import DataSpec, ModelSpec
from autotune.load.streams import default_workers, resident_limit


def write_folder(root: Path, images: int, side: int, classes: int) -> None:
    g = torch.Generator().manual_seed(0)
    colours = torch.randint(40, 216, (classes, 3), generator=g)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
    for i in range(images):
        c = i % classes
        noise = torch.randint(-40, 40, (side, side, 3), generator=g)
        pixels = (colours[c] + noise).clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.jpg", quality=90)


def small_cnn(classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes),
    )  # fmt: skip


def peak_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s*(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="default: autotune's")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        write_folder(root / "images", args.images, args.side, args.classes)
        written = time.perf_counter() - started
        torch.save(small_cnn(args.classes), root / "model.pt")
        before = peak_mb()
        started = time.perf_counter()
        result = search(
            ModelSpec(str(root / "model.pt"), trust_model=True),
            DataSpec(str(root / "images"), workers=args.workers),
            space={
                "lr": {"low": 1e-3, "high": 1e-2, "log": True},
                "augment": ["none", "light"],
                "fit": {"max_epochs": 1, "patience": 1},
            },
            trials=args.trials,
            out=root / "run",
            console=Console(file=io.StringIO()),
            device="cpu",
        )
        took = time.perf_counter() - started
        main_peak = peak_mb()
    worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    trials = [t for t in result.study.trials if "loader_wait" in t.user_attrs]
    waits = [t.user_attrs["loader_wait"] for t in trials]
    held = args.images * 3 * args.side**2 * 4 / 2**20
    workers = args.workers if args.workers is not None else default_workers()
    lines = [
        f"### Streaming an image folder ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `python bench/streaming.py --images {args.images} --trials {args.trials}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"CPU, 1 torch thread, {workers} loader workers. {args.images:,} JPEGs of "
        f"{args.side}x{args.side} in {args.classes} classes (written in {written:.0f} s); a "
        f"{sum(p.numel() for p in small_cnn(args.classes).parameters()):,}-parameter CNN; "
        f"{args.trials} trials of one epoch (lr, augment), the baseline, the export.",
        "",
        "| what | value |",
        "| --- | --- |",
        f"| storage chosen | {'streamed' if trials else 'resident'} (resident limit "
        f"{resident_limit() / 2**20:.0f} MB; the inputs as float32 tensors: {held:,.0f} MB) |",
        f"| peak RSS, search process | {main_peak:,.0f} MB (before the search: {before:,.0f} MB) |",
        f"| peak RSS, largest loader worker | {worker_peak:,.0f} MB |",
        f"| loader-bound fraction per trial (wait for data / training step time) | "
        f"{', '.join(f'{w:.2f}' for w in waits)} (median {statistics.median(waits):.2f}) |"
        if waits
        else "| loader-bound fraction | n/a: no trial streamed |",
        f"| search wall time | {took:.0f} s |",
    ]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
