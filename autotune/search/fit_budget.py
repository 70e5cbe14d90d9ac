"""A slimming trial over a size budget, raised to the least slimming that fits it.

Under ``--max-params`` or ``--max-macs`` the sampler proposes how far to slim without knowing
what that leaves, and a trial over the budget used to be pruned untrained: on the ViT at
``--max-params 0.3``, 12 of stage 2's 15 children (BENCHMARKS.md, "The ViT's width pruned").
Instead, the trial's slimming ratios that the space may raise move together from the sampled
values toward the space's highest, and the trial builds the first point along that line
(bisected on builds of the real model with its real rankings) whose model fits. A trial that
does not fit even at the highest stays over budget and untrained, as before.

The raised values are ones the space can sample (a point of a ``step`` grid, one of a list of
choices), so the study's charts can show them. The sampler keeps the values it proposed: it
learns that they came to the fitted model's score.
The trial records the values it built (``TrialRecord.fitted``, and its ``config``), which the
leaderboard shows and the export rebuilds. A latency budget is not fitted: each step would be
timed against the source, for longer than a build, and within the timing's noise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from torch import nn

from autotune.config import TrialConfig
from autotune.load.tasks import TaskData
from autotune.search.size_floor import highest
from autotune.search.space import Param, SearchSpace
from autotune.trial.build import Changes
from autotune.trial.cost import count_macs

RAISED = ("prune", "prune_width", "drop_features")
"""The ratios raised together; per-layer ratios (``prune_layers``) are left as sampled."""
STEPS = 6
"""Bisection steps: the fitted point is within 1/64 of the line from the sampled values to the
highest of the budget's edge (a build of a small ViT takes about a second)."""

Built = tuple[nn.Module, Changes, TaskData]


def fit_to_budget(
    config: TrialConfig,
    built: Built,
    space: SearchSpace,
    limits: dict[str, float],
    build: Callable[[TrialConfig], Built],
) -> tuple[TrialConfig, Built, dict[str, float]]:
    """``config`` and its ``built`` model where they fit ``limits`` (``Budgets.limits``) or
    cannot be raised to; else the least raised configuration that fits, its model, and the
    values it raised, by name."""
    sizes = {k: v for k, v in limits.items() if k in ("params", "macs")}
    line = {
        name: (getattr(config, name), top)
        for name in RAISED
        if space.may_be_nonzero(name) and (top := highest(space, name)) > getattr(config, name)
    }
    if not line or fits(built, sizes) or config.prune_layers:
        return config, built, {}
    low, high, best = 0.0, 1.0, None
    for step in range(STEPS + 1):
        at = high if step == 0 else (low + high) / 2
        values: dict[str, Any] = {
            n: allowed(space.params[n], a + at * (b - a)) for n, (a, b) in line.items()
        }
        raised = dataclasses.replace(config, **values)
        candidate = _built_or_none(build, raised)
        if candidate is not None and fits(candidate, sizes):
            high, best = at, (raised, candidate)
        elif step == 0:
            return config, built, {}  # over budget even at the space's highest
        else:
            low = at
    assert best is not None  # the highest fitted
    raised, candidate = best
    return raised, candidate, {name: getattr(raised, name) for name in line}


def allowed(param: Param, value: float) -> float:
    """The least value at or above ``value`` that ``param`` can be sampled at: a point of its
    ``step`` grid, or one of its choices; ``value`` itself in a continuous range."""
    if param.choices is not None:
        above = [c for c in param.choices if isinstance(c, (int, float)) and c >= value - 1e-9]
        return float(min(above)) if above else value
    if param.step and param.low is not None and isinstance(param.high, (int, float)):
        steps = math.ceil((value - param.low) / param.step - 1e-9)
        return min(param.low + steps * param.step, float(param.high))
    return value


def _built_or_none(build: Callable[[TrialConfig], Built], config: TrialConfig) -> Built | None:
    """``build(config)``, or None where it fails: raising a ratio is no reason to fail a trial
    whose sampled configuration builds (torch-pruning fails on some models at some ratios)."""
    try:
        return build(config)
    except Exception:
        return None


def fits(built: Built, sizes: dict[str, float]) -> bool:
    """Whether the model of ``built`` is within ``sizes`` (``params``, ``macs``); a model whose
    MACs cannot be counted is not held to a MACs budget here (the trial's cost judges it)."""
    model, _, data = built
    if "params" in sizes and sum(p.numel() for p in model.parameters()) > sizes["params"]:
        return False
    if "macs" in sizes:
        macs = count_macs(model, data.x_val)
        return macs is None or macs <= sizes["macs"]
    return True
