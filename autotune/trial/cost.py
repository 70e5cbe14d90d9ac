"""What a model costs to run: parameters, multiply-accumulates per sample, measured latency."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from autotune.budget_text import budget_limit
from autotune.errors import AutotuneError
from autotune.load.anatomy import device_of, set_training
from autotune.load.tasks import Inputs


@dataclass(frozen=True)
class Cost:
    params: int
    """Parameters, trainable or not."""
    macs: int | None
    """Multiply-accumulates for one sample (torch-pruning's op counter); None where it cannot
    count (TorchScript and torch.export models take no hooks)."""
    latency_ms: float | None
    """Median wall time of one forward pass over a batch (``LATENCY_BATCH`` samples unless
    told), on the device; None when not timed."""
    latency_ratio: float | None = None
    """Median of the paired ratios (this model's time / the source's), the two timed alternately
    in the same process; None when measured without the source."""
    ratio_spread: float | None = None
    """Half the interquartile range of those ratios: the noise of ``latency_ratio``."""


LATENCY_BATCH = 32
TIMING_BUDGET_S = 0.01
"""Wall time a trial's interleaved repeats may take: a few milliseconds on a small model; a
large one gets ``MIN_REPEATS`` rounds whatever they take."""
MIN_REPEATS = 5
RETIME_S = 0.5
"""Wall time of a second timing, for a trial whose first was within its noise of a budget."""


def measure(
    model: nn.Module,
    example: Inputs,
    source: tuple[nn.Module, Inputs] | None = None,
    budget_s: float = TIMING_BUDGET_S,
    batch: int = LATENCY_BATCH,
    timed: bool = True,
    macs: int | None = None,
) -> Cost:
    """Count and time ``model`` on ``example`` (its batch is cut or repeated to ``batch``
    samples), on the model's device (streamed inputs are read for just that batch). Untimed
    (``timed=False``), it only counts: the search times trials only where a budget or front
    asks for it.

    With ``source`` (the source model and its own input), both are warmed up and then timed in
    alternation, so that a slow moment of the machine hits both alike; the ratio of each pair
    says how much faster the model is, and their spread how sure that is. The rounds stop
    after about ``budget_s`` seconds (at least ``MIN_REPEATS``, at most 100 times that).

    ``macs``, counted before (``count_macs``), is taken as it is rather than counted again.
    """
    params = sum(p.numel() for p in model.parameters())
    runs = [(model, _batch(model, example, batch))]
    if source is not None and timed:
        runs.append((source[0], _batch(source[0], source[1], batch)))
    was = [m.training for m, _ in runs]
    for m, _ in runs:
        set_training(m, False)
    try:
        if macs is None:
            with torch.no_grad():
                macs = _count_macs(model, runs[0][1][:1])
        times = _interleaved(runs, budget_s) if timed else []
    finally:
        for (m, _), training in zip(runs, was, strict=True):
            set_training(m, training)
    if not timed:
        return Cost(int(params), macs, None)
    latency = 1000 * statistics.median(times[0])
    if source is None:
        return Cost(int(params), macs, latency)
    ratios = sorted(t / s for t, s in zip(times[0], times[1], strict=True))
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return Cost(int(params), macs, latency, statistics.median(ratios), (q3 - q1) / 2)


def _batch(model: nn.Module, example: Inputs, size: int) -> torch.Tensor:
    device = device_of(model, example.device)
    batch = example[:size].to(device)
    if len(batch) < size:
        batch = batch.repeat(-(-size // len(batch)), *[1] * (batch.ndim - 1))
    return batch[:size]


def _interleaved(runs: list[tuple[nn.Module, torch.Tensor]], budget_s: float) -> list[list[float]]:
    """Wall times of each model's forward pass, alternating models, after two warm-up rounds."""
    times: list[list[float]] = [[] for _ in runs]
    round_s = 0.0
    with torch.no_grad():
        for _ in range(2):  # warm-up: caches, lazy initialisation, the allocator
            start = time.perf_counter()
            for m, batch in runs:
                _timed(m, batch)
            round_s = time.perf_counter() - start
        repeats = int(min(100 * MIN_REPEATS, max(MIN_REPEATS, budget_s / max(round_s, 1e-9))))
        for i in range(repeats):
            # Alternate which goes first so neither always follows the other's cache state.
            order = range(len(runs)) if i % 2 == 0 else reversed(range(len(runs)))
            for j in order:
                times[j].append(_timed(*runs[j]))
    return times


def _timed(model: nn.Module, batch: torch.Tensor) -> float:
    if batch.is_cuda:  # the other model's queued kernels are not this one's time
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(batch)
    if batch.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def count_macs(model: nn.Module, example: Inputs) -> int | None:
    """``model``'s multiply-accumulates for one sample (``example``'s first), counted as
    ``measure`` counts them, in eval mode; None where they cannot be counted."""
    was = model.training
    set_training(model, False)
    try:
        with torch.no_grad():
            return _count_macs(model, example[:1].to(device_of(model, example.device)))
    finally:
        set_training(model, was)


def _count_macs(model: nn.Module, example: torch.Tensor) -> int | None:
    import torch_pruning as tp

    if isinstance(model, (torch.jit.ScriptModule, torch.fx.GraphModule)):
        return None
    macs, _ = tp.utils.count_ops_and_params(model, example)
    return int(macs)


def parse_budget(text: str | float | int, original: int, what: str) -> int:
    """A size budget as an absolute count of ``original``'s unit (``budget_text.budget_limit``)."""
    limit = budget_limit(text, original, what)
    if limit < 1:
        raise AutotuneError(
            f"--max-{what} {text!r} allows no {what} at all (that share of the source model's "
            f"{original:,} comes to {limit:.2g}): raise it"
        )
    return int(limit)
