"""What autotune records of one trial: one typed record, stored as the trial's user attributes.

The objective writes it in a handful of storage calls (when the trial starts, before it trains,
when it ends) rather than one per attribute; everything that reads a trial back (the
leaderboard, the report, the export, the selection) reads ``TrialRecord.from_trial``. The
attributes stay separate keys, so ``optuna-dashboard`` lists each and studies written before
the record still read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.search import optuna_internals


@dataclass(frozen=True)
class TrialRecord:
    """One trial as autotune recorded it; None where it was not (yet) recorded."""

    baseline: bool = False
    """The source model, scored as it came (not trained); never counts toward ``--trials``."""
    recipe: bool = False
    """The standard fine-tune (``search.seeds.recipe``): the export is never worse than it."""
    worker: dict[str, Any] | str | None = None
    """The process that ran it (``search.identity``): whether it is alive, after a crash;
    ``host:pid`` in studies written before run ids."""
    stage: int | None = None
    """1: tuning the full model, 2: slimming ``parent`` (staged searches); 0 unstaged."""
    parent: int | None = None
    """The stage-1 trial whose trained model a stage-2 trial slims."""
    config: dict[str, Any] | None = None
    """The full ``TrialConfig`` it trained, fixed values included."""
    trainable_params: int | None = None
    total_params: int | None = None
    macs: int | None = None
    latency_ms: float | None = None
    latency_ratio: float | None = None
    latency_ratio_spread: float | None = None
    features_kept: int | None = None
    """Input columns kept, when some were dropped."""
    heads_kept: dict[str, int] | None = None
    """Attention module -> heads kept, when heads were pruned."""
    width_kept: dict[str, int] | None = None
    """Residual stream (by its first writer) -> channels kept, when its width was pruned."""
    fitted: dict[str, float] | None = None
    """The slimming ratios it built where they differ from those sampled: raised to fit a size
    budget (``search.fit_budget``)."""
    precision: str | None = None
    """The arithmetic it trained in (``trial.accel``)."""
    epochs: int | None = None
    best_epoch: int | None = None
    seconds: float | None = None
    stop_reason: str | None = None
    """Why training stopped (patience, max_epochs, the pruner, a budget)."""
    fail_reason: str | None = None
    loader_wait: float | None = None
    """Streamed data: the share of training spent waiting for batches."""
    val_accuracy: float | None = None
    val_loss: float | None = None
    gain: float | None = None
    """The validation metric minus the source's, signed so that positive is better."""
    history: list[dict[str, float]] | None = None
    """Per epoch: the validation scores (and the training loss)."""
    fixed: int | None = None
    """Validation samples the source got wrong and this model gets right."""
    broken: int | None = None
    """Validation samples the source got right and this model gets wrong (negative flips)."""
    flip_rate: float | None = None
    samples: int | None = None
    """Validation samples scored."""
    source_right: int | None = None
    per_class_accuracy: dict[str, list[float | None]] | None = None
    interrupted: bool = False
    """Stopped by Ctrl-C or a signal: not counted; the next run samples another trial in its
    place, or runs it again from its in-trial checkpoint (``resumes``)."""
    resumes: int | None = None
    """The interrupted trial whose training it continues from an in-trial checkpoint
    (``trial.resume``): the number its checkpoint, stage and parent are found by."""
    resumed_after: int | None = None
    """The epoch it continued after (its own training started at the next)."""
    resume_copy: str | None = None
    """The artifact id, in ``--checkpoint-store``, of its in-trial checkpoint's last whole copy
    (``search.resume_store``); ``resume_copy_error``: why the last copy failed."""
    resume_copy_error: str | None = None
    surplus: bool = False
    """Started when the study already had its total: stopped at once, not counted."""
    oom: str | None = None
    cuda_memory_mb: float | None = None

    @classmethod
    def from_trial(cls, trial: FrozenTrial | optuna.Trial) -> TrialRecord:
        """The record of a stored trial, or of the running one (what it recorded so far)."""
        attrs = trial.user_attrs
        return cls(**{name: attrs[name] for name in FIELDS if name in attrs})


FIELDS = frozenset(f.name for f in dataclasses.fields(TrialRecord))


def record(trial: optuna.Trial, **values: Any) -> None:
    """Write these fields of ``trial``'s record in one storage call."""
    unknown = set(values) - FIELDS
    if unknown:
        raise TypeError(f"not fields of TrialRecord: {sorted(unknown)}")
    optuna_internals.set_user_attrs(trial, values)


def built_params(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's parameters as it built them: those sampled, with the ratios it raised to fit
    a size budget over them (``fitted``, ``search.fit_budget``)."""
    return dict(trial.params) | (TrialRecord.from_trial(trial).fitted or {})


def never_trained(trial: FrozenTrial) -> bool:
    """Pruned before its first epoch (over a budget, or a near copy of its parent): not trained
    at all, where a trial stopped early trained some epochs."""
    epochs = TrialRecord.from_trial(trial).epochs or trial.intermediate_values
    return trial.state == TrialState.PRUNED and not epochs
