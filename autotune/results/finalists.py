"""Which trial to export: the top few on validation, each trained again with fresh seeds.

A validation split of a few dozen samples scores in steps of several points, and one training
run's seed moves a trial by as much: the trial with the single best validation score is partly
luck (BENCHMARKS.md, "How much of the pick is luck"). So the top ``count`` trials, and the
standard recipe trial (which keeps the export "never worse than the recipe" on the same
footing), train again from their stored configuration with ``FINALIST_SEEDS`` fresh seeds, on
the training split as in the search, and are judged on validation by the mean of their original
and fresh scores. The chosen trial is
exported with its own weights. The test split is not read here.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial

from autotune.config import score_key
from autotune.results.export import Workspace, trial_maker
from autotune.search.record import TrialRecord
from autotune.search.study import CHOSEN, config_of, metric_sign, ranked_trials

FINALIST_SEEDS = 2
"""Fresh seeds per finalist, beside the seed it ran with."""
MIN_TRIALS = 10
"""Trained trials a study needs before its finalists are compared: with fewer, the top few are
most of the study, and training them again would cost about as much as the search."""
SEED_OFFSET = 100_003
"""Fresh run j of trial N trains with the seed of "trial" N + (j + 1) * SEED_OFFSET: seeds no
trial of a study uses."""


@dataclass(frozen=True)
class Finalist:
    trial: int
    scores: list[tuple[float, float]]
    """``config.score_key`` of each run (the trial's own first), larger is better."""

    @property
    def mean(self) -> tuple[float, float]:
        return (
            statistics.fmean(s[0] for s in self.scores),
            statistics.fmean(s[1] for s in self.scores),
        )


def choose(
    work: Workspace,
    study: optuna.Study,
    count: int,
    say: Callable[[str], None] = lambda _: None,
) -> FrozenTrial | None:
    """Record (``CHOSEN``) and return the finalist with the best mean validation score; None
    when there is nothing to choose among (fewer than two candidates, a Pareto study, fewer
    than ``MIN_TRIALS`` trained trials)."""
    ranked = ranked_trials(study)
    if count < 1 or len(study.directions) > 1 or not ranked:
        return None
    if TrialRecord.from_trial(ranked[0]).baseline:
        return None  # nothing beat the untouched model: there is no configuration to compare
    top = ranked[:count]
    chosen = study.user_attrs.get(CHOSEN)
    if chosen is not None and chosen["top"] == [t.number for t in top]:
        return study.trials[chosen["trial"]]  # a re-run of a finished study: chosen already
    finalists = [t for t in top if not TrialRecord.from_trial(t).baseline]
    recipe = next((t for t in ranked if TrialRecord.from_trial(t).recipe), None)
    if recipe is not None and recipe.number not in {t.number for t in finalists}:
        finalists.append(recipe)
    if len(finalists) < 2:
        return None
    trained = sum(
        1 for t in study.get_trials(deepcopy=False) if TrialRecord.from_trial(t).seconds is not None
    )
    if trained < MIN_TRIALS:
        return None
    metric = "accuracy" if metric_sign(study) > 0 else "loss"
    results = [
        Finalist(t.number, [_own(t, metric), *_fresh(work, study, t, metric)]) for t in finalists
    ]
    # Ties go to the better-ranked trial (max keeps the first).
    best = max(results, key=lambda f: f.mean)
    study.set_user_attr(
        CHOSEN,
        {
            "trial": best.trial,
            "top": [t.number for t in top],
            "seeds": 1 + FINALIST_SEEDS,
            "finalists": {str(f.trial): [list(s) for s in f.scores] for f in results},
        },
    )
    say(_summary(results, best, metric))
    return study.trials[best.trial]


def _own(trial: FrozenTrial, metric: str) -> tuple[float, float]:
    rec = TrialRecord.from_trial(trial)
    return score_key(metric, rec.val_accuracy or 0.0, rec.val_loss or 0.0)


def _fresh(
    work: Workspace, study: optuna.Study, trial: FrozenTrial, metric: str
) -> list[tuple[float, float]]:
    maker = trial_maker(work, study, trial)
    config = config_of(trial, work.space)
    scores = []
    for j in range(FINALIST_SEEDS):
        model, _, data = maker.build(config)
        result = maker.fit(model, config, trial.number + (j + 1) * SEED_OFFSET, data)
        best = result.history[result.best_epoch - 1]
        scores.append(score_key(metric, best["val_accuracy"], best["val_loss"]))
    return scores


def _summary(results: list[Finalist], best: Finalist, metric: str) -> str:
    def shown(value: tuple[float, float]) -> str:
        return f"{value[0]:.4f}" if metric == "accuracy" else f"{-value[0]:.4f}"

    parts = [f"trial {f.trial} {shown(f.scores[0])} -> {shown(f.mean)}" for f in results]
    return (
        f"finalists, validation {metric} of the search's run -> mean over "
        f"{1 + FINALIST_SEEDS} seeds: {'; '.join(parts)}; exporting trial {best.trial}"
    )
