"""The latency budget and front: parsing, who is timed, and what a trial over it becomes."""

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
from autotune.budget_text import latency_budget
from autotune.errors import AutotuneError
from autotune.results.leaderboard import Leaderboard
from autotune.search import budgets as budgets_module
from autotune.search.budgets import Budgets, over_words
from autotune.trial import cost as cost_module
from autotune.trial.cost import RETIME_S, Cost

SPACE = {
    "lr": 1e-2,
    "prune": {"low": 0.0, "high": 0.8},
    "fit": {"max_epochs": 3, "patience": 3},
    "analysis": ANALYSIS,
}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock: a forward pass takes a microsecond per parameter, every time, so a
    model's latency ratio is exactly its share of the source's parameters."""

    def timed(model: nn.Module, batch: torch.Tensor) -> float:
        return 1e-6 * sum(p.numel() for p in model.parameters())

    monkeypatch.setattr(cost_module, "_timed", timed)


@pytest.mark.parametrize(("text", "parsed"), [("0.5x", (0.5, "x")), (" 5ms", (5.0, "ms"))])
def test_a_latency_budget_is_a_ratio_or_milliseconds(text: str, parsed: tuple) -> None:
    assert latency_budget(text) == parsed


@pytest.mark.parametrize("text", ["0.5", "fast", "0x", "-2ms", "5 s"])
def test_a_latency_budget_without_its_unit_is_refused_before_the_search(
    text: str, tmp_path: Path
) -> None:
    with pytest.raises(AutotuneError, match=r"--max-latency .* \(0\.5x\) or milliseconds"):
        search(_mlp(), _wide_data(), space=SPACE, trials=2, out=tmp_path, max_latency=text)
    assert not (tmp_path / "study.journal").exists()  # refused before any work


def test_a_trial_over_the_latency_budget_is_never_exported(clock: None, tmp_path: Path) -> None:
    model, data = _mlp(), _wide_data()
    console = Console(file=io.StringIO(), width=200)
    # "top": the most accurate trial within budget (the full-size ones score best here).
    result = search(
        model, data, space=SPACE, trials=8, out=tmp_path, console=console, max_latency="0.5x",
        select="top",
    )  # fmt: skip
    trials = result.study.trials
    assert trials[0].user_attrs["latency_ratio"] == 1.0 and trials[0].constraints["latency_ratio"]
    over = [t for t in trials[1:] if t.user_attrs["latency_ratio"] > 0.5]
    under = [t for t in trials[1:] if t.user_attrs["latency_ratio"] <= 0.5]
    assert over and under  # the search met both
    for t in over:
        assert t.constraints["latency_ratio"] > 0
        if t.user_attrs["stage"] == 2:  # slimmed too little: never trained
            assert t.state == TrialState.PRUNED
            assert "over budget: latency" in t.user_attrs["stop_reason"]
    rows = {r.number: r for r in Leaderboard.from_study(result.study, "accuracy").rows}
    assert not any(rows[t.number].feasible for t in over)
    best = result.best
    assert best is not None and best.trial in {t.number for t in under}
    # Measured again at export, on the same clock: within the budget.
    assert best.config["structure"]["latency_ms"]["ratio"] <= 0.5


def test_trials_are_not_timed_without_a_latency_budget_or_front(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), width=200)
    result = search(_mlp(), _wide_data(), space=SPACE, trials=3, out=tmp_path, console=console)
    trained = result.study.trials[1:]
    assert trained and not any("latency_ms" in t.user_attrs for t in trained)
    assert "latency" not in console.file.getvalue()  # type: ignore[attr-defined]
    best = result.best  # the exported model is timed: its figure is the one users quote
    assert best is not None and best.config["structure"]["latency_ms"]["ratio"] > 0


def test_the_latency_front_sets_the_metric_against_the_latency_ratio(
    clock: None, tmp_path: Path
) -> None:
    console = Console(file=io.StringIO(), width=200)
    result = search(
        _mlp(), _wide_data(), space=SPACE, trials=6, out=tmp_path, console=console,
        pareto="latency",
    )  # fmt: skip
    for t in result.study.trials:
        if t.state == TrialState.COMPLETE:
            assert t.values[1] == pytest.approx(t.user_attrs["latency_ratio"], abs=1e-4)


def test_a_ratio_within_its_noise_of_the_budget_is_timed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[float] = []

    def measure(model: nn.Module, example: object, **kw: float) -> Cost:
        calls.append(kw.get("budget_s", 0.0))
        return Cost(10, None, 1.0, 0.52, 0.03)  # 0.52x ± 0.03 against a 0.5x budget

    monkeypatch.setattr(budgets_module, "measure", measure)
    budgets = Budgets(limits={"latency_ratio": 0.5}, timed=True)
    source = (nn.Linear(2, 2), torch.zeros(1, 2))
    budgets.measure(nn.Linear(2, 2), torch.zeros(1, 2), source)
    assert calls == [0.0, RETIME_S]
    calls.clear()
    budgets.limits["latency_ratio"] = 0.8  # far from it: one timing decides
    budgets.measure(nn.Linear(2, 2), torch.zeros(1, 2), source)
    assert calls == [0.0]


@pytest.mark.parametrize(("cap", "said"), [(0.5, "> 0.5x"), (0.004, "> 0.004x"), (0.75, "> 0.75x")])
def test_a_latency_over_its_budget_names_the_budget_as_given(cap: float, said: str) -> None:
    words = over_words({"latency_ratio": 0.97}, {"latency_ratio": cap})
    assert words == [f"latency 0.97x {said} the source's"]
