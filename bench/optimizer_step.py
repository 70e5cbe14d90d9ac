"""What the fused optimizer kernels save in a trial's epoch, on the CPU or a GPU.

``fine_tune`` epochs (its validation pass included, as in a trial) of resnet18 and
mobilenet_v3_small at 32 px (the real-scale tasks' shape, random weights and images: no
download) and of the demo CNN on the demo's data, with ``make_optimizer``'s fused AdamW / SGD
against PyTorch's default per-tensor loop, alternating in one process after a warm-up; the
median of ``--rounds``. Also the optimizer step alone on resnet18's parameters.

Run: python bench/optimizer_step.py [--device cpu] [--rounds 3] [--samples 1024]
[--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from _shared import emit
from torch import nn

import autotune.trial.fit as fit
from autotune.config import TrialConfig
from autotune.load.data import load_data
from autotune.load.models import load_model
from autotune.load.tasks import TaskData, from_tensors

BATCH = 32
"""The standard recipe's batch size (trial 1 of every search)."""


FUSABLE = fit.fusable


def per_tensor(use: bool) -> None:
    """Make ``make_optimizer`` build PyTorch's default per-tensor loop (True) or fuse (False)."""
    fit.fusable = (lambda params: False) if use else FUSABLE


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def epoch_seconds(model: nn.Module, data: TaskData, config: TrialConfig) -> float:
    """One epoch of ``fine_tune`` on a copy of ``model``."""
    trained = copy.deepcopy(model)
    _sync(data.y_train.device)
    start = time.perf_counter()
    fit.fine_tune(trained, data, config, max_epochs=1, patience=1)
    _sync(data.y_train.device)
    return time.perf_counter() - start


def step_ms(model: nn.Module, optimizer_name: str, steps: int = 20) -> float:
    """Milliseconds of one optimizer step on ``model``'s parameters (random gradients)."""
    trained = copy.deepcopy(model)
    for p in trained.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    config = dataclasses.replace(TrialConfig(), optimizer=optimizer_name)
    optimizer = fit.make_optimizer(trained, config)
    optimizer.step()  # warm-up: state allocation
    device = next(trained.parameters()).device
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    _sync(device)
    return (time.perf_counter() - start) / steps * 1000


def alternate(measure: Callable[[], float], rounds: int) -> tuple[float, float]:
    """Median of ``measure`` with the per-tensor loop and fused, alternating, after a warm-up."""
    times: dict[bool, list[float]] = {True: [], False: []}
    for looped in (True, False):
        per_tensor(looped)
        measure()
    for _ in range(rounds):
        for looped in (True, False):
            per_tensor(looped)
            times[looped].append(measure())
    per_tensor(False)
    return statistics.median(times[True]), statistics.median(times[False])


def tasks(device: torch.device, samples: int) -> dict[str, tuple[nn.Module, TaskData]]:
    """The models timed, each with its data on ``device``."""
    torch.manual_seed(0)
    x = torch.rand(samples, 3, 32, 32)
    y = torch.randint(0, 10, (samples,))
    val = samples // 4
    images = from_tensors(x[val:], y[val:], x_val=x[:val], y_val=y[:val]).to(device)
    return {
        "resnet18, 32 px": (torchvision.models.resnet18(num_classes=10).to(device), images),
        "mobilenet_v3_small, 32 px": (
            torchvision.models.mobilenet_v3_small(num_classes=10).to(device),
            images,
        ),
        "demo CNN, demo data": (load_model("demo").module.to(device), load_data("demo").to(device)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", help="append the result to this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name, (model, data) in tasks(device, args.samples).items():
        for optimizer_name in ("adamw", "sgd"):
            config = dataclasses.replace(
                TrialConfig(), optimizer=optimizer_name, batch_size=BATCH, lr=1e-3
            )
            timed = functools.partial(epoch_seconds, model, data, config)
            looped, fused = alternate(timed, args.rounds)
            rows.append(
                f"| {name} | {optimizer_name} | {looped:.2f} | {fused:.2f} | "
                f"{fused / looped:.2f}x |"
            )
    resnet = torchvision.models.resnet18(num_classes=10).to(device)
    steps = []
    for optimizer_name in ("adamw", "sgd"):
        looped, fused = alternate(functools.partial(step_ms, resnet, optimizer_name), args.rounds)
        steps.append(f"| {optimizer_name} | {looped:.1f} | {fused:.1f} | {fused / looped:.2f}x |")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    emit(
        [
            f"### Fused optimizer kernels in a trial's epoch ({time.strftime('%Y-%m-%d')}, "
            f"{where})",
            "",
            f"Command: `python bench/optimizer_step.py --device {args.device} --rounds "
            f"{args.rounds} --samples {args.samples} --threads {args.threads}`  ",
            f"One `fine_tune` epoch (validation pass included), batch {BATCH}, lr 1e-3, every "
            f"layer trained; {args.samples} random 3x32x32 images (a quarter of them the "
            f"validation set) for the torchvision models, the demo's own data for its CNN; "
            f"median of {args.rounds} alternating rounds after a warm-up.",
            "",
            "| model | optimizer | per-tensor loop, s | fused, s | fused / loop |",
            "| --- | --- | ---: | ---: | ---: |",
            *rows,
            "",
            "The optimizer step alone on resnet18's 11.2M parameters (random gradients):",
            "",
            "| optimizer | per-tensor loop, ms | fused, ms | fused / loop |",
            "| --- | ---: | ---: | ---: |",
            *steps,
        ],
        args.write,
    )


if __name__ == "__main__":
    main()
