"""What the report and its PNGs plot, read off a study: the completed trials, accuracy against
size and its front, and the trial whose learning curve is shown."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.search.record import TrialRecord
from autotune.search.selection import exported_trial
from autotune.search.study import ATTR, best_trial, metric_sign


def completed(study: optuna.Study) -> list[FrozenTrial]:
    """The completed trials with a value (the baseline included)."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None
    ]


def front(points: list[tuple[float, float, int]], s: float) -> list[tuple[float, float, int]]:
    """Points (size, metric, trial) not beaten by a smaller-or-equal, better-or-equal one.

    ``s`` is the metric's sign (``config.sign``). A single-objective study has no Pareto front
    of its own (``study.best_trials`` is its best trial), so the size front is computed here.
    """
    ordered = sorted(points, key=lambda p: (p[0], -s * p[1]))
    front: list[tuple[float, float, int]] = []
    for point in ordered:
        if not front or s * (point[1] - front[-1][1]) > 0:
            front.append(point)
    return front


AXES = {"params": "parameters", "macs": "MACs", "flips": "negative flips",
        "latency": "latency (x the source's)"}  # fmt: skip
"""The size chart's horizontal axis for each ``--pareto`` setting."""


def pareto_setting(study: optuna.Study) -> str | None:
    """A ``--pareto`` study's second objective as its settings name it (``params``, ``macs``,
    ``flips``, ``latency``); None for a study of one objective."""
    if len(study.directions) == 1:
        return None
    return study.user_attrs.get(ATTR, {}).get("settings", {}).get("pareto")


def size_axis(study: optuna.Study) -> str:
    """What the size chart's points are placed by: a ``--pareto`` study's second objective,
    else the parameters."""
    if len(study.directions) == 1:
        return AXES["params"]
    return AXES.get(pareto_setting(study) or "", "second objective")


def size_points(study: optuna.Study) -> list[tuple[float, float, int]]:
    """(size, metric, trial) of each completed trial that recorded its size: its parameters,
    or in a ``--pareto`` study its second objective (MACs, latency ratio or flips), the axis
    its front lies on."""
    if len(study.directions) > 1:
        return [(t.values[1], t.values[0], t.number) for t in completed(study)]
    return [
        (float(size), t.values[0], t.number)
        for t in completed(study)
        if (size := TrialRecord.from_trial(t).total_params) is not None
    ]


def size_front(
    study: optuna.Study, points: list[tuple[float, float, int]] | None = None
) -> list[tuple[float, float, int]]:
    """The front the report's size chart draws and ``leaderboard.csv``'s ``pareto_front``
    marks, as ``size_points`` in order of size: a ``--pareto`` study's own front (its best
    trials on the metric and its second objective), else ``front``, on parameters; of
    ``points`` where the caller has them already."""
    points = size_points(study) if points is None else points
    if len(study.directions) > 1:
        on = {t.number for t in study.best_trials}
        return sorted((p for p in points if p[2] in on), key=lambda p: p[0])
    return front(points, metric_sign(study))


def shown_trial(study: optuna.Study) -> tuple[FrozenTrial | None, str]:
    """The trial whose learning curve the report draws: the exported one, else (before any
    export) the top one on validation; and which of the two it is."""
    exported = exported_trial(study)
    if exported is not None:
        return study.trials[exported], "exported"
    return best_trial(study), "top"
