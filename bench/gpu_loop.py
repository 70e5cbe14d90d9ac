"""Training throughput of autotune's loop against a bare loop, and the analysis time, on one device.

resnet18 (random weights, no download) on random 3x64x64 images resident on the device: samples
per second of ``trial.fit.fine_tune`` with its ``--amp``/``--channels-last`` choice for the
device, against a hand-written loop with the same switches (bf16 autocast and channels-last on
CUDA, fp32 on the CPU), in the same process, alternating, after a warm-up. Then the SHAP
analysis of the model (batched expected gradients). Prints a Markdown section.

Run: python bench/gpu_loop.py [--device cuda] [--samples 2048] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from _shared import emit
from torch import nn

from autotune.config import TrialConfig
from autotune.load.tasks import from_tensors
from autotune.rank.methods import score
from autotune.trial.accel import Accel, plan
from autotune.trial.fit import fine_tune

BATCH = 128


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, accel: Accel) -> float:
    """One epoch of the loop anyone would write: AdamW, shuffled batches, autocast."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    _sync(x.device)
    start = time.perf_counter()
    order = torch.randperm(len(x), device=x.device)
    for i in range(0, len(x), BATCH):
        batch = order[i : i + BATCH]
        with accel.autocast(x.device):
            loss = nn.functional.cross_entropy(model(accel.inputs(x[batch])), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(x.device)
    return len(x) / (time.perf_counter() - start)


def autotune_epoch(model: nn.Module, data, accel: Accel) -> float:  # type: ignore[no-untyped-def]
    """One epoch of ``fine_tune`` (its validation pass included, as in a trial)."""
    _sync(data.y_train.device)
    start = time.perf_counter()
    fine_tune(model, data, TrialConfig(lr=1e-3, batch_size=BATCH), max_epochs=1, patience=1,
              accel=accel)  # fmt: skip
    _sync(data.y_train.device)
    return len(data.y_train) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", help="append the result to this Markdown file")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.samples, 3, 64, 64)
    y = torch.randint(0, 10, (args.samples,))
    val = args.samples // 8
    data = from_tensors(x, y, x_val=x[:val], y_val=y[:val]).to(device)
    model = torchvision.models.resnet18(num_classes=10).to(device)
    accel = plan(device, model)
    mine, bare = [], []
    bare_epoch(model, data.x_train, data.y_train, accel)  # warm-up: kernels, allocator
    autotune_epoch(model, data, accel)
    for _ in range(args.rounds):
        bare.append(bare_epoch(model, data.x_train, data.y_train, accel))
        mine.append(autotune_epoch(model, data, accel))
    _sync(device)
    start = time.perf_counter()
    score("shap", model.eval(), data.x_val[:128], data.y_val[:128], device=device)
    analysis_s = time.perf_counter() - start
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    a, b = statistics.median(mine), statistics.median(bare)
    emit(
        [
            f"### Training loop throughput, resnet18 ({time.strftime('%Y-%m-%d')}, {name})",
            "",
            f"Command: `python bench/gpu_loop.py --device {args.device} --samples {args.samples} "
            f"--rounds {args.rounds}`  ",
            f"{args.samples} random 3x64x64 images resident on the device, batch {BATCH}, "
            f"{accel.describe()}; median of {args.rounds} alternating epochs after a warm-up.",
            "",
            "| loop | samples/s |",
            "| --- | ---: |",
            f"| bare loop (AdamW, same switches) | {b:,.0f} |",
            f"| autotune's fine_tune (one epoch incl. its validation pass) | {a:,.0f} |",
            f"| ratio autotune / bare | {a / b:.2f}x |",
            "",
            f"SHAP analysis (batched expected gradients, 128 samples) on {args.device}: "
            f"{analysis_s:.1f} s.",
        ],
        args.write,
    )


if __name__ == "__main__":
    main()
