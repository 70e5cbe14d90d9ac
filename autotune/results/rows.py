"""One trial as the leaderboard shows it: its row, read off the stored trial."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial

from autotune.config import sign
from autotune.search.record import TrialRecord, built_params, never_trained
from autotune.search.study import feasible, trial_score
from autotune.search.trials import orphaned, retries_left

ROW_STATES = ("INTERRUPTED", "ORPHANED", "RETRIED", "SURPLUS")
"""The row's states that are no Optuna state (``TrialRow.state``)."""
COUNTS = (
    "trial", "trainable_params", "total_params", "macs", "stage", "parent", "fixed", "broken",
    "epochs",
)  # fmt: skip
"""The columns of ``TrialRow.as_dict`` that hold whole numbers, in the rows that have one."""


@dataclass(frozen=True)
class TrialRow:
    """One trial as the leaderboard shows it."""

    number: int
    state: str
    """COMPLETE, PRUNED, FAIL, RUNNING, BASELINE, INTERRUPTED (by Ctrl-C or a signal),
    ORPHANED (still RUNNING in the study, but its worker on this machine died), RETRIED (failed
    when its worker died, and queued again under a new number) or SURPLUS (stopped at once:
    the study had its total, or another worker continues the same trial). Of the trials that
    ran to an end only COMPLETE, PRUNED and FAIL count toward ``--trials``."""
    value: float | None
    """The validation metric (the best epoch's; the last reported one for a pruned trial)."""
    gain: float | None
    """``value`` minus the baseline's, signed so that positive is better."""
    trainable: int | None
    total: int | None
    epochs: int | None
    seconds: float | None
    params: dict[str, Any]
    note: str = ""
    """Why it failed or stopped early."""
    macs: int | None = None
    """Multiply-accumulates per sample of the trial's model."""
    latency_ms: float | None = None
    """Measured forward time of a 32-sample batch."""
    feasible: bool = True
    """Within the search's budgets (``--max-params``, ``--max-macs``)."""
    front: bool = False
    """On the Pareto front (``--pareto`` studies)."""
    stage: int | None = None
    """1: tuning the full model, 2: slimming ``parent`` (staged searches); 0 unstaged."""
    parent: int | None = None
    """The stage-1 trial a stage-2 trial slimmed."""
    latency_ratio: float | None = None
    """Latency over the source model's, timed alternately with it (median of the pairs)."""
    latency_ratio_spread: float | None = None
    """Half the interquartile range of those pairs' ratios."""
    flips: tuple[int, int] | None = None
    """(fixed, broken): validation errors of the source model this one fixed, and samples the
    source got right that this one gets wrong (negative flips)."""
    score: tuple[float, float] | None = None
    """How the search ranks it (``search.study.trial_score``, larger is better): ``value``,
    then the other validation score for ties."""
    exported: bool = False
    """The trial in ``OUT/best`` (not always the top one: ``search.selection``)."""
    untrained: bool = False
    """Never trained (``search.record.never_trained``), where a trial stopped early trained."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "trial": self.number,
            "state": self.state,
            "value": self.value,
            "gain": self.gain,
            "trainable_params": self.trainable,
            "total_params": self.total,
            "macs": self.macs,
            "latency_ms": self.latency_ms,
            "latency_ratio": self.latency_ratio,
            "latency_ratio_spread": self.latency_ratio_spread,
            "feasible": self.feasible,
            "exported": self.exported,
            "pareto_front": self.front,
            "stage": self.stage,
            "parent": self.parent,
            "fixed": None if self.flips is None else self.flips[0],
            "broken": None if self.flips is None else self.flips[1],
            "epochs": self.epochs,
            "seconds": self.seconds,
            **{f"param_{k}": v for k, v in self.params.items()},
            "note": self.note,
        }


def row_of(
    trial: FrozenTrial,
    baseline: float | None,
    metric: str,
    front: frozenset[int] = frozenset(),
    limits: dict[str, float] | None = None,
    exported: int | None = None,
    retried: frozenset[int] = frozenset(),
) -> TrialRow:
    """``trial``'s row; ``limits``: the study's latest size budgets (``search.study.LIMITS``),
    which judge ``feasible`` as the search and the export judge it; ``exported``: the number of
    the trial in ``OUT/best``; ``retried``: the numbers of the trials run again under another
    (``search.trials.retried``)."""
    rec = TrialRecord.from_trial(trial)
    state = "BASELINE" if rec.baseline else trial.state.name
    # Failed in the study, yet not among the trials of ``--trials`` (``search.trials.counts``).
    if rec.interrupted and state == "FAIL":  # stopped by Ctrl-C or a signal: run again, not failed
        state = "INTERRUPTED"
    elif rec.surplus and state == "FAIL":
        state = "SURPLUS"
    elif trial.number in retried and state == "FAIL":  # its retry counts in its place
        state = "RETRIED"
    note = rec.fail_reason or rec.stop_reason or ""
    if state == "RUNNING" and orphaned(trial):  # kill -9: nothing ended it in the study
        state = "ORPHANED"
        then = "runs it again" if retries_left(trial) else "leaves it failed"
        note = f"its worker died; the next run fails it and {then}"
    # The metric is the first objective; a Pareto study's second is the model's size.
    value = trial.values[0] if trial.values else None
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    gain = None if value is None or baseline is None else sign(metric) * (value - baseline)
    seconds = rec.seconds
    if seconds is None and trial.datetime_complete and trial.datetime_start:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return TrialRow(
        number=trial.number,
        state=state,
        value=value,
        gain=gain,
        trainable=rec.trainable_params,
        total=rec.total_params,
        epochs=rec.epochs if rec.epochs is not None else len(trial.intermediate_values) or None,
        seconds=seconds,
        params=built_params(trial),
        note=note,
        macs=rec.macs,
        latency_ms=rec.latency_ms,
        feasible=feasible(trial, limits),
        front=trial.number in front,
        stage=rec.stage,
        parent=rec.parent,
        latency_ratio=rec.latency_ratio,
        latency_ratio_spread=rec.latency_ratio_spread,
        flips=(rec.fixed or 0, rec.broken) if rec.broken is not None else None,
        score=None if value is None else trial_score(value, trial.user_attrs, metric),
        exported=trial.number == exported,
        untrained=never_trained(trial),
    )


def with_export_latency(row: TrialRow, measured: dict[str, Any] | None) -> TrialRow:
    """The exported trial's ``row`` with the latency its export ``measured`` against the source
    (``config.yaml``'s ``structure.latency_ms``, a second of timing): the figure the summary and
    the model card quote. A search times its trials only under a latency budget or front, and
    for less long, so the row's own figure (if any) gives way to it."""
    if measured is None:
        return row
    return dataclasses.replace(
        row,
        latency_ms=measured["model"],
        latency_ratio=measured["ratio"],
        latency_ratio_spread=measured["ratio_spread"],
    )
