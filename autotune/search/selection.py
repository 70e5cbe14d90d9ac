"""Which trial a search exports when its validation split cannot tell the best ones apart.

A validation split of a few dozen or a few hundred samples scores each trial with an error of
a standard error or so: the trial on top is partly the luckiest (BENCHMARKS.md, "How much of
the pick is luck"). Without a size budget the export follows the one-standard-error rule
(Breiman et al., 1984): among the trials whose validation accuracy is within one standard error
of the top one's (and no lower than the standard recipe's), the smallest model, which is
cheaper to run and has less room to have over-fitted the split. ``--select top`` exports the
top trial as it ranked. Under a size budget the user has said how small the model must be, and
the top trial within it is exported.
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.search.record import TrialRecord
from autotune.search.study import CHOSEN, LIMITS, metric_sign, ranked_trials

SELECT = "autotune_select"
"""Study user attribute: the latest run's ``--select`` rule (``config.SELECT_RULES``)."""
BEST_EXPORT = "best_export"
"""Study user attribute: the trial the latest export wrote to ``OUT/best``, its metrics (the
held-out ones included), its errors and its latency (``results.export``)."""


def exported_trial(study: optuna.Study) -> int | None:
    """The number of the trial in ``OUT/best``; None before the study's first export."""
    held = study.user_attrs.get(BEST_EXPORT)
    return held.get("trial") if isinstance(held, dict) else None


def standard_error(accuracy: float, samples: int) -> float:
    """The standard error of an accuracy measured on ``samples`` samples, with the plus-four
    estimate (Agresti and Coull) so that a perfect score still has one."""
    p = (round(accuracy * samples) + 2) / (samples + 4)
    return math.sqrt(p * (1 - p) / samples)


def under_top(top: FrozenTrial, errors: float = 1.0) -> float | None:
    """``top``'s validation accuracy less ``errors`` of its standard errors: the floor of the
    band the export picks from (one), or of a stage-2 child's reach (``OUT_OF_REACH``); None
    when the trial did not record how many validation samples it was scored on."""
    samples = TrialRecord.from_trial(top).samples
    if not samples:
        return None
    return top.values[0] - errors * standard_error(top.values[0], int(samples))


def within_noise(ranked: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trained trials of ``ranked`` (best first, by accuracy) whose validation accuracy is
    within one standard error of the top one's, and no lower than the standard recipe trial's
    (the export is never worse than the recipe on validation); just the top one when the
    number of validation samples was not recorded."""
    top = ranked[0]
    records = {t.number: TrialRecord.from_trial(t) for t in ranked}
    floor = under_top(top)
    if floor is None or records[top.number].baseline:
        return [top]
    recipe = [t.values[0] for t in ranked if records[t.number].recipe]
    floor = max([floor, *recipe])
    return [
        t
        for t in ranked
        if not records[t.number].baseline
        and t.values[0] >= floor - 1e-9
        and records[t.number].total_params is not None
    ] or [top]


OUT_OF_REACH = 3.0
"""A slimmed child whose best validation accuracy after its warm-up is more than this many
standard errors below the top trial's is stopped (``reach_floor``): to be exported it would
have to climb two more to enter the one-standard-error band in the epochs it has left. Such
children are the ones pruned too far to recover (BENCHMARKS.md, "Stage 2 stops the children
out of reach")."""


def reach_floor(study: optuna.Study) -> float | None:
    """The validation accuracy a stage-2 child must have reached by the end of its warm-up
    (``OUT_OF_REACH`` standard errors under the top trial's); None where the study cannot say:
    no trial ranked yet, no sample count, or a metric other than accuracy."""
    if len(study.directions) != 1 or metric_sign(study) < 0:
        return None
    ranked = ranked_trials(study)
    return under_top(ranked[0], OUT_OF_REACH) if ranked else None


def simplest(ranked: list[FrozenTrial]) -> FrozenTrial:
    """The one-standard-error rule: the smallest model (parameters) ``within_noise`` of the top
    trial; among equally small ones, the better ranked."""
    near = within_noise(ranked)
    order = {t.number: i for i, t in enumerate(ranked)}
    size = {t.number: TrialRecord.from_trial(t).total_params or 0 for t in near}
    return min(near, key=lambda t: (size[t.number], order[t.number]))


def chosen_trial(study: optuna.Study) -> FrozenTrial | None:
    """The trial to export: the finalists' choice when it was made on the study as it ranks
    now (the same top trials: no trial finished or budget changed since); else, by the latest
    run's ``--select`` rule, the ``simplest`` trial when there is no size budget, or the top."""
    return _choice(study)[0]


def choice_note(study: optuna.Study) -> str:
    """Why ``chosen_trial`` is the one it is, in a line for ``config.yaml``."""
    return _choice(study)[1]


def _choice(study: optuna.Study) -> tuple[FrozenTrial | None, str]:
    ranked = ranked_trials(study)
    chosen = study.user_attrs.get(CHOSEN)
    if chosen is not None and [t.number for t in ranked[: len(chosen["top"])]] == chosen["top"]:
        return study.trials[chosen["trial"]], "the finalists' best mean over fresh seeds"
    if not ranked:
        return None, "no trial within the budgets"
    top = ranked[0]
    words = "the top trial within the budgets" if _outscored(study, top) else "the top trial"
    if not _by_simplest(study):
        return top, f"{words} on validation"
    pick = simplest(ranked)
    if pick.number == top.number:
        return top, f"{words} on validation, and the smallest within its standard error"
    samples = int(TrialRecord.from_trial(top).samples or 0)
    return pick, (
        f"the smallest model within one standard error "
        f"({standard_error(top.values[0], samples):.3f} on {samples} samples) of the top "
        f"trial {top.number}'s validation accuracy {top.values[0]:.4f} (--select top exports it)"
    )


def _outscored(study: optuna.Study, top: FrozenTrial) -> bool:
    """Whether a completed trial left out by the budgets scored higher than ``top`` on
    validation: then ``top`` is the top only within them."""
    if len(study.directions) != 1:
        return False
    s = metric_sign(study)
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return any(t.values is not None and s * t.values[0] > s * top.values[0] for t in trials)


def may_be_chosen(study: optuna.Study, value: float, params: int) -> bool:
    """Whether a trial finishing with this validation ``value`` and model size could become
    the ``simplest`` rule's choice, the study as it is: within one standard error of the top
    trial and smaller than the current choice. The search keeps its weights, so that the
    export need not train it again (later trials may still move the choice elsewhere)."""
    ranked = ranked_trials(study)
    if not ranked or not _by_simplest(study):
        return False
    floor = under_top(ranked[0])
    if floor is None:
        return False
    near = value >= floor - 1e-9
    return near and params < (TrialRecord.from_trial(simplest(ranked)).total_params or 0)


def _by_simplest(study: optuna.Study) -> bool:
    """Whether the latest run's rule is ``simplest`` and applies: no size budget, and one
    objective, accuracy (``_choice``)."""
    rule = study.user_attrs.get(SELECT) == "simplest" and not study.user_attrs.get(LIMITS)
    return rule and len(study.directions) == 1 and metric_sign(study) > 0
