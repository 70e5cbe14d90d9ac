"""A search's budgets: size limits, a latency limit, a flip limit and the Pareto axis, as the
objective applies them to each trial's cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from autotune.budget_text import check_constrains, latency_budget
from autotune.config import SearchSettings
from autotune.load.tasks import Inputs
from autotune.search.study import within_limits
from autotune.trial.cost import LATENCY_BATCH, RETIME_S, Cost, measure, parse_budget
from autotune.trial.flips import Flips, flip_limit, flip_violation


@dataclass
class Budgets:
    """The limits of a search and its optional Pareto axis."""

    limits: dict[str, float] = field(default_factory=dict)
    """``params`` / ``macs`` -> the most a model may have; ``latency_ratio`` -> the slowest it
    may be, as a ratio of the source's latency (a budget in milliseconds is converted by the
    source's, timed in the same process)."""
    pareto: str | None = None
    max_flips: int | None = None
    """The most negative flips (validation samples the source got right and a trial's model
    gets wrong) a trial may have: measured after training, unlike the sizes."""
    timed: bool = False
    """Time every trial against the source: only a latency budget or front uses it."""
    latency_batch: int = LATENCY_BATCH

    @classmethod
    def of(cls, settings: SearchSettings, val_samples: int) -> Budgets:
        """The budgets ``settings`` ask for, less those relative to the source (``resolve``)."""
        budgets = cls(pareto=settings.pareto, timed=settings.times_latency)
        budgets.latency_batch = settings.latency_batch
        if settings.max_flips is not None:  # checked here, before any long work
            check_constrains(settings.max_flips, "flips", val_samples)
            budgets.max_flips = flip_limit(settings.max_flips, val_samples)
        return budgets

    def resolve(self, settings: SearchSettings, source: Cost) -> None:
        """Set the limits given relative to the source model, measured as ``source``. A size
        budget that allows none, and MACs asked of a model whose MACs cannot be counted, were
        refused before the analysis (``search.size_floor``)."""
        if settings.max_latency is not None:
            number, unit = latency_budget(settings.max_latency)
            assert source.latency_ms is not None  # the source is always timed
            self.limits["latency_ratio"] = number if unit == "x" else number / source.latency_ms
        for what in ("params", "macs"):
            budget = getattr(settings, f"max_{what}")
            if budget is not None:
                self.limits[what] = parse_budget(budget, getattr(source, what), what)

    def measure(self, model: nn.Module, example: Inputs, source: tuple[nn.Module, Inputs]) -> Cost:
        """``model``'s size and, with a latency budget or front, its latency: timed side by side
        with the ``source`` model, a ratio fair to both. A ratio within its noise of the budget
        is timed again for longer rather than judged on a few milliseconds."""
        size = self.latency_batch
        cost = measure(model, example, source=source, batch=size, timed=self.timed)
        limit = self.limits.get("latency_ratio")
        ratio, spread = cost.latency_ratio, cost.ratio_spread
        if limit is not None and ratio is not None and abs(ratio - limit) <= (spread or 0.0):
            cost = measure(model, example, source=source, batch=size, budget_s=RETIME_S)
        return cost

    def baseline_flips(self) -> dict[str, float]:
        """The source model's flip constraint: it breaks nothing, so it is within any budget."""
        limit = self.max_flips
        return {} if limit is None else {"constraints:flips": flip_violation(0, limit)}

    def violations(self, cost: Cost) -> dict[str, float]:
        """Constraint values: positive is over budget (by that fraction of the budget)."""
        return {k: getattr(cost, k) / limit - 1.0 for k, limit in self.limits.items()}

    def feasible(self, cost: Cost) -> bool:
        return within_limits(cost_sizes(cost), self.limits)

    def over(self, cost: Cost) -> str:
        """The budgets ``cost`` exceeds, as a trial's stop reason says them."""
        return ", ".join(over_words(cost_sizes(cost), self.limits))

    def size_objective(self, cost: Cost, flips: Flips | None = None) -> list[float]:
        """The second objective of a Pareto study (a size, the negative flips or the latency
        ratio); nothing otherwise."""
        if self.pareto == "flips":
            return [float(flips.broken if flips is not None else 0)]
        if self.pareto == "latency":
            return [float(cost.latency_ratio or 0.0)]
        return [float(getattr(cost, self.pareto))] if self.pareto else []


def cost_sizes(cost: Cost) -> dict[str, float | None]:
    """What the limits bound, by their names (``Budgets.limits``)."""
    return {"params": cost.params, "macs": cost.macs, "latency_ratio": cost.latency_ratio}


def over_words(sizes: dict[str, float | None], limits: dict[str, float]) -> list[str]:
    """Each of ``limits`` that ``sizes`` exceed (or did not measure), in words: a trial's stop
    reason and an export of a trial over the budget say them alike."""
    said = []
    for what, cap in limits.items():
        size = sizes.get(what)
        if size is None:
            said.append(f"{'latency' if what == 'latency_ratio' else what} not measured")
        elif size > cap and what == "latency_ratio":
            said.append(f"latency {size:.2f}x > {cap:.2g}x the source's")  # 0.004x, not 0.00x
        elif size > cap:
            said.append(f"{what} {size:,} > {cap:,.0f}")
    return said


def cost_attrs(cost: Cost) -> dict[str, Any]:
    """What a trial records of its model's cost (its latency only where it was timed)."""
    attrs: dict[str, Any] = {"total_params": cost.params, "macs": cost.macs}
    if cost.latency_ms is not None:
        attrs["latency_ms"] = round(cost.latency_ms, 3)
    if cost.latency_ratio is not None:
        attrs["latency_ratio"] = round(cost.latency_ratio, 4)
        attrs["latency_ratio_spread"] = round(cost.ratio_spread or 0.0, 4)
    return attrs
