"""A slimming trial over a size budget is raised to the least slimming that fits it
(``search.fit_budget``): it trains where it used to be pruned untrained, the leaderboard shows
what it built, and the export rebuilds that."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState
from rich.console import Console
from test_slimming import ANALYSIS, _mlp, _wide_data
from torch import nn

from autotune import search
from autotune.config import TrialConfig
from autotune.load.tasks import from_tensors
from autotune.results.report import _in_memory
from autotune.search.fit_budget import STEPS, Built, allowed, fit_to_budget
from autotune.search.space import load_space
from autotune.trial.build import Changes

SPACE = load_space({"prune": {"low": 0.0, "high": 0.8}, "prune_width": {"low": 0.0, "high": 0.4}})
DATA = from_tensors(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))


def _built(config: TrialConfig) -> Built:
    """A stand-in build: 100 parameters, of which ``prune`` and ``prune_width`` each remove
    their share of 50."""
    kept = round(100 - 50 * config.prune - 50 * config.prune_width)
    return nn.Linear(1, kept, bias=False), Changes(), DATA


def _fit(config: TrialConfig, params: int) -> tuple[TrialConfig, int, dict[str, float]]:
    raised, (model, _, _), said = fit_to_budget(
        config, _built(config), SPACE, {"params": params}, _built
    )
    return raised, sum(p.numel() for p in model.parameters()), said


def test_an_over_budget_configuration_is_raised_along_the_line_to_the_highest() -> None:
    sampled = TrialConfig(prune=0.2, prune_width=0.1)  # keeps 85 parameters
    raised, params, said = _fit(sampled, 60)
    assert params <= 60
    # Both ratios moved by the same share of their way to the space's highest (0.8, 0.4)...
    share = (raised.prune - 0.2) / 0.6
    assert (raised.prune_width - 0.1) / 0.3 == pytest.approx(share)
    assert said == {"prune": raised.prune, "prune_width": raised.prune_width}
    # ...and the least share that fits, within the bisection's step: one step less is over.
    step = 1 / 2**STEPS
    less = TrialConfig(prune=raised.prune - 0.6 * step, prune_width=raised.prune_width - 0.3 * step)
    assert sum(p.numel() for p in _built(less)[0].parameters()) > 60


@pytest.mark.parametrize(
    ("sampled", "params"),
    [
        (TrialConfig(prune=0.5, prune_width=0.2), 80),  # already fits: left as sampled
        (TrialConfig(prune=0.2, prune_width=0.1), 30),  # the highest keeps 40: cannot fit
        (TrialConfig(prune=0.8, prune_width=0.4), 30),  # already at the highest
    ],
)
def test_what_fits_or_cannot_fit_is_left_as_sampled(sampled: TrialConfig, params: int) -> None:
    raised, _, said = _fit(sampled, params)
    assert raised == sampled and said == {}


def test_a_raised_ratio_is_one_the_space_can_sample() -> None:
    """On a ``step`` grid or a list of choices, the raised value is the next one the space
    allows, not a point between them (the study's charts refuse values off the grid)."""
    stepped = load_space({"prune": {"low": 0.0, "high": 0.8, "step": 0.1}})
    listed = load_space({"prune": [0.0, 0.25, 0.5, 0.75]})
    for space, grid in ((stepped, [round(0.1 * i, 1) for i in range(9)]), (listed, [0.75])):
        sampled = TrialConfig(prune=0.0 if space is listed else 0.1)
        raised, (model, _, _), said = fit_to_budget(
            sampled, _built(sampled), space, {"params": 70}, _built
        )
        assert sum(p.numel() for p in model.parameters()) <= 70
        assert any(raised.prune == pytest.approx(v) for v in grid), raised.prune
        assert said == {"prune": raised.prune}
    assert allowed(stepped.params["prune"], 0.61) == pytest.approx(0.7)
    assert allowed(listed.params["prune"], 0.3) == 0.5


def test_a_raise_that_fails_to_build_leaves_the_trial_as_sampled() -> None:
    """torch-pruning fails on some models at some ratios: the trial then stays over budget
    (pruned untrained, as it was), rather than failing, which five times in a row ends a study.
    """

    def failing(config: TrialConfig) -> Built:
        if config.prune > 0.5:
            raise RuntimeError("torch-pruning: no such group")
        return _built(config)

    sampled = TrialConfig(prune=0.2, prune_width=0.1)
    raised, _, said = fit_to_budget(sampled, _built(sampled), SPACE, {"params": 60}, failing)
    assert raised == sampled and said == {}  # the highest fails: nothing to bisect toward


def test_a_search_trains_its_over_budget_children_at_the_slimming_that_fits(
    tmp_path: Path,
) -> None:
    model = _mlp()
    limit = int(0.35 * sum(p.numel() for p in model.parameters()))
    space = {
        "lr": {"low": 3e-3, "high": 3e-2, "log": True},
        "prune": {"low": 0.0, "high": 0.8},
        "prune_scope": "layer",
        "fit": {"max_epochs": 2, "patience": 2},
        "analysis": ANALYSIS,
    }
    console = Console(file=io.StringIO(), width=200)
    result = search(model, _wide_data(), space=space, trials=10, out=tmp_path, console=console,
                    max_params="0.35", pruner="none")  # fmt: skip
    children = [t for t in result.study.trials if t.user_attrs.get("stage") == 2]
    fitted = [t for t in children if "fitted" in t.user_attrs]
    assert fitted, "every child sampled a prune that fit: the test needs one that did not"
    rows = {r.number: r for r in result.leaderboard.rows}
    for t in fitted:
        built = t.user_attrs["fitted"]["prune"]
        # Trained, within the budget, at a higher prune than sampled, recorded as built...
        assert t.state == TrialState.COMPLETE and t.user_attrs["epochs"] >= 1
        assert t.user_attrs["total_params"] <= limit
        assert built > t.params["prune"] and t.user_attrs["config"]["prune"] == built
        # ...and the leaderboard shows the prune it built, not the one sampled.
        assert rows[t.number].params["prune"] == built
    # The report's parameter importances read what the trials built, as the leaderboard does.
    held = _in_memory(result.study, fitted)
    assert [t.params["prune"] for t in held.trials] == [
        t.user_attrs["fitted"]["prune"] for t in fitted
    ]
    # No child went untrained for the budget: the highest prune fits it.
    assert not any("over budget" in t.user_attrs.get("stop_reason", "") for t in children)
    best = result.best
    assert best is not None and best.trial in {t.number for t in children}
    exported = result.study.trials[best.trial]
    assert best.config["structure"]["params"]["model"] == exported.user_attrs["total_params"]
