"""Which trial ``autotune export`` writes: the one asked for, else the study's choice."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.errors import AutotuneError
from autotune.search.budgets import over_words
from autotune.search.record import TrialRecord, never_trained
from autotune.search.selection import chosen_trial
from autotune.search.study import LIMITS, feasible, recorded_sizes

STATES = {
    TrialState.FAIL: "failed",
    TrialState.PRUNED: "was stopped early",
    TrialState.RUNNING: "is still running",
    TrialState.WAITING: "has not run yet",
}
"""How a trial with no model to export is said (``TrialState``'s names are not English)."""


def any_trained(study: optuna.Study) -> bool:
    """Whether a trial besides the baseline completed: without one there is nothing to export
    but the source model as it was (the search and ``autotune export`` both say so)."""
    return any(
        t.values is not None and not TrialRecord.from_trial(t).baseline
        for t in study.get_trials(deepcopy=False)
    )


def pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """Trial ``number``, or the study's choice: the finalists' pick, else the best trial (the
    baseline when nothing beat it)."""
    if number is None:
        if not any_trained(study):  # the search exports nothing then, not the source unchanged
            raise AutotuneError(
                f"study {study.study_name!r} has no trial completed besides the baseline (trial "
                "0, the source model unchanged): run more trials (the search's command with a "
                "larger --trials continues it), or pass --trial 0 to export the source model as "
                "it is"
            )
        best = chosen_trial(study)
        if best is None:
            raise AutotuneError(
                f"study {study.study_name!r} has no completed trial within its budgets to "
                f"export: {none_within(study)}"
            )
        return best
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise AutotuneError(
            f"--trial {number}: study {study.study_name!r} has trials 0..{len(trials) - 1}"
        )
    trial = trials[number]
    if trial.state != TrialState.COMPLETE:
        rec = TrialRecord.from_trial(trial)
        reason = rec.fail_reason or rec.stop_reason or ""
        said = STATES.get(trial.state, "is " + trial.state.name.lower())
        if never_trained(trial):
            said = "was never trained"
            reason = reason.removeprefix("not trained: ")
        raise AutotuneError(
            f"--trial {number} {said}"
            f"{f' ({reason})' if reason else ''}: "
            "only completed trials have a model to export"
        )
    return trial


LIMIT_WORDS = {
    "params": ("the smallest model its trials built has {:,.0f} parameters", "--max-params"),
    "macs": ("the smallest model its trials built has {:,.0f} MACs", "--max-macs"),
    "latency_ratio": ("the fastest model its trials built ran at {:.2f}x the source's latency",
                      "--max-latency"),
}  # fmt: skip
"""How ``none_within`` says the least of each limited size its trials reached."""


def none_within(study: optuna.Study) -> str:
    """Why no completed trial is within the search's budgets, and what to do: the size limit
    every trial built was over (with the least any reached), else that the trials within the
    size limits stopped early, failed or broke more than the flip budget allows."""
    limits = study.user_attrs.get(LIMITS) or {}
    trials = [t for t in study.get_trials(deepcopy=False) if not TrialRecord.from_trial(t).baseline]
    for what, cap in limits.items():
        sizes = [s for t in trials if (s := recorded_sizes(t).get(what)) is not None]
        if sizes and min(sizes) > cap:
            reached, flag = LIMIT_WORDS[what]
            allowed = f"{cap:.2g}x" if what == "latency_ratio" else f"{cap:,.0f}"
            return (
                f"{reached.format(min(sizes))}, over the {allowed} {flag} allows: allow more, "
                "or let the space remove more (a higher prune: docs/search-space.md)"
            )
    return (
        "the trials within its size budgets were stopped early, failed, or broke more "
        "validation samples than --max-flips allows: run more trials (the same command with "
        "a larger --trials continues the study), or allow more"
    )


def over_budgets(study: optuna.Study, trial: FrozenTrial) -> str | None:
    """Which of the search's budgets (those of its latest run, ``LIMITS``) ``trial`` is over,
    in words; None when it is within them all. ``--trial N`` exports such a trial as asked, and
    its bundle says that the search would not have."""
    limits = study.user_attrs.get(LIMITS)
    if feasible(trial, limits):
        return None
    said = over_words(recorded_sizes(trial), limits or {})
    if trial.constraints.get("flips", 0.0) > 0:
        said.append("more negative flips than --max-flips allows")
    return ", ".join(said) or "over the budgets it ran under"
