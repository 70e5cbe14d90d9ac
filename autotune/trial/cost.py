"""What a model costs to run: parameters, multiply-accumulates per sample, measured latency."""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from autotune.errors import AutotuneError
from autotune.load.anatomy import set_training
from autotune.load.tasks import Inputs


@dataclass(frozen=True)
class Cost:
    params: int
    """Parameters, trainable or not."""
    macs: int | None
    """Multiply-accumulates for one sample (torch-pruning's op counter); None where it cannot
    count (TorchScript and torch.export models take no hooks)."""
    latency_ms: float
    """Median wall time of one forward pass over ``LATENCY_BATCH`` samples, on the device."""


LATENCY_BATCH = 32


def measure(model: nn.Module, example: Inputs, repeats: int = 5) -> Cost:
    """Count and time ``model`` on ``example`` (its batch is cut or repeated to 32 samples),
    on the model's device."""
    params = sum(p.numel() for p in model.parameters())
    device = next((p.device for p in model.parameters()), example.device)
    was = model.training
    set_training(model, False)
    try:
        with torch.no_grad():
            macs = _count_macs(model, example[:1].to(device))
            batch = example[:LATENCY_BATCH].to(device)
            if len(batch) < LATENCY_BATCH:
                batch = batch.repeat(-(-LATENCY_BATCH // len(batch)), *[1] * (batch.ndim - 1))
                batch = batch[:LATENCY_BATCH]
            times = []
            for i in range(repeats + 1):
                start = time.perf_counter()
                model(batch)
                if batch.is_cuda:
                    torch.cuda.synchronize()
                if i:  # the first pass warms caches up
                    times.append(time.perf_counter() - start)
    finally:
        set_training(model, was)
    return Cost(int(params), macs, 1000 * statistics.median(times))


def _count_macs(model: nn.Module, example: torch.Tensor) -> int | None:
    import torch_pruning as tp

    if isinstance(model, (torch.jit.ScriptModule, torch.fx.GraphModule)):
        return None
    macs, _ = tp.utils.count_ops_and_params(model, example)
    return int(macs)


_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_budget(text: str | float | int, original: int, what: str) -> int:
    """A budget as an absolute count: ``0.5`` and ``50%`` are fractions of ``original``;
    ``250000``, ``250k``, ``1.5M`` are counts."""
    raw = str(text).strip().lower()
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(%|k|m|g)?", raw)
    if match is None:
        raise AutotuneError(
            f"--max-{what} {text!r} is not a budget: give a fraction of the original (0.5 or "
            f"50%) or a count (250000, 250k, 1.5M)"
        )
    number, unit = float(match.group(1)), match.group(2) or ""
    if unit == "%":
        limit = original * number / 100
    elif unit == "" and number <= 1:
        limit = original * number
    else:
        limit = number * _SUFFIX[unit]
    if limit < 1:
        raise AutotuneError(f"--max-{what} {text!r} allows no {what} at all: raise it")
    return int(limit)
