"""Errors fixed and broken against the source model, and the flip budget."""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from conftest import TinyNet, blobs
from rich.console import Console
from torch import nn

from autotune import search
from autotune.budget_text import check_constrains
from autotune.config import SearchSettings
from autotune.errors import AutotuneError
from autotune.load.job import Job
from autotune.load.tasks import TaskData, from_tensors
from autotune.results.leaderboard import Leaderboard
from autotune.search.runner import Search
from autotune.search.space import load_space
from autotune.trial.cost import parse_budget
from autotune.trial.flips import count_flips, flip_limit, predictions


def _lookup(predicted: list[int], classes: int = 3) -> nn.Module:
    """A model that answers ``predicted[i]`` for the one-hot input of sample i."""
    model = nn.Linear(len(predicted), classes, bias=False)
    with torch.no_grad():
        model.weight.zero_()
        for i, c in enumerate(predicted):
            model.weight[c, i] = 1.0
    return model


def test_a_model_that_swaps_two_known_samples_fixes_one_and_breaks_one() -> None:
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    x = torch.eye(6)
    source = _lookup([0, 1, 2, 0, 2, 2])  # wrong on sample 4 only
    new = _lookup([0, 1, 2, 1, 1, 2])  # sample 4 fixed, sample 3 broken
    flips = count_flips(predictions(source, x), predictions(new, x), y, ["a", "b", "c"])
    assert (flips.fixed, flips.broken, flips.samples, flips.source_right) == (1, 1, 6, 5)
    assert flips.rate == pytest.approx(1 / 6)
    # Class a lost sample 3, class b gained sample 4, class c did not move.
    assert flips.per_class == {"a": (1.0, 0.5), "b": (0.5, 1.0), "c": (1.0, 1.0)}


def test_flip_budgets_read_as_a_rate_or_a_count() -> None:
    assert flip_limit("0.01", 200) == 2
    assert flip_limit("1%", 200) == 2
    assert flip_limit("5", 200) == 5
    assert flip_limit(0, 200) == 0
    for bad in ("1.5", "-1", "lots"):
        with pytest.raises(AutotuneError, match="--max-flips") as refused:
            flip_limit(bad, 200)
        # Said in the flips' own terms, not a model size's.
        assert "validation samples" in str(refused.value) and "source model" not in str(
            refused.value
        )
        assert "250k" not in str(refused.value)


@pytest.mark.parametrize("budget", [1.0, "1.0", "100%", "150%"])
def test_a_flip_budget_of_all_the_validation_samples_or_more_is_refused_before_any_work(
    budget: str | int, tmp_path: Path, tiny_data: TaskData
) -> None:
    # No model breaks more samples than there are: such a budget bound nothing, silently.
    out = tmp_path / "run"
    with pytest.raises(AutotuneError) as refused:
        search(
            TinyNet(),
            tiny_data,
            trials=1,
            out=out,
            console=Console(file=io.StringIO()),
            max_flips=budget,
        )
    said = str(refused.value)
    assert said.startswith(f"--max-flips {budget!r} allows ") and "\n" not in said
    assert "of the validation samples, so it limits nothing" in said
    assert said.endswith(
        "give a share below 1 (0.01 or 1%) or a count (5), or leave --max-flips out"
    )
    assert not out.exists()


def test_a_flip_count_of_all_the_validation_samples_or_more_is_refused_before_any_trial(
    tmp_path: Path, tiny_data: TaskData
) -> None:
    out = tmp_path / "run"
    with pytest.raises(AutotuneError) as refused:
        search(TinyNet(), tiny_data, trials=1, out=out, console=Console(file=io.StringIO()),
               max_flips="10k")  # fmt: skip
    said = str(refused.value)
    samples = len(tiny_data.x_val)
    assert said.startswith(
        f"--max-flips '10k' allows 10,000 flips, at least the {samples} validation samples, "
        "so it limits nothing"
    )
    assert not list(out.glob("**/*.journal"))  # no study, no trial
    assert flip_limit(str(samples - 1), samples) == samples - 1  # one fewer is a budget


@pytest.mark.parametrize("budget", [1, "1", " 1 "])
def test_a_flip_budget_of_a_bare_1_is_one_flip(budget: str | int) -> None:
    # As a share it would be all of the samples, a budget that limits nothing.
    assert SearchSettings(max_flips=budget).resolved({}).max_flips == budget
    assert flip_limit(budget, 40) == 1
    check_constrains(budget, "flips")  # not refused


def test_an_ambiguous_flip_budget_offers_no_share_that_would_be_refused() -> None:
    with pytest.raises(AutotuneError) as refused:
        SearchSettings(max_flips="2.0").resolved({})
    assert "write 2 (flips) or a share below 1 (0.01 or 1%)" in str(refused.value)


@pytest.mark.parametrize(
    ("budget", "share", "count"),
    [("0.25", 50, 50), ("25%", 50, 50), ("40", 40, 40), ("1k", 1000, 1000), ("0", 0, 0)],
)
def test_every_budget_reads_one_grammar(budget: str, share: int, count: int) -> None:
    # The same text means the same for a size budget and a flip budget (200 of each).
    assert flip_limit(budget, 200) == share
    if count:
        assert parse_budget(budget, 200, "params") == count
    for bad in ("2.0", "-1", "lots"):
        for check in (lambda b: flip_limit(b, 200), lambda b: parse_budget(b, 200, "params")):
            with pytest.raises(AutotuneError, match="--max-"):
                check(bad)


@pytest.mark.slow
def test_a_trial_over_the_flip_budget_is_recorded_and_never_exported(tmp_path: Path) -> None:
    # Planted: 8 validation samples are labelled as the source predicts, not as their blob.
    # The source gets them right; a model fine-tuned on clean labels breaks them, while
    # fixing many more: the most accurate trials are over a budget of 3 flips.
    x, y = blobs(300)
    torch.manual_seed(0)
    source = TinyNet().eval()
    x_val, y_val = x[200:280], y[200:280].clone()
    guessed = predictions(source, x_val)
    planted = (guessed != y_val).nonzero().flatten()[:8]
    y_val[planted] = guessed[planted]
    data = from_tensors(x[:200], y[:200], x_val=x_val, y_val=y_val, x_test=x[280:], y_test=y[280:])
    space = {"lr": {"low": 5e-3, "high": 3e-2, "log": True}, "fit": {"max_epochs": 6}}
    out = tmp_path / "run"
    result = search(
        source, data, space=space, trials=4, out=out, console=Console(file=io.StringIO()),
        max_flips="3", seed_trials=False,
    )  # fmt: skip
    trials = result.study.trials
    trained = [t for t in trials if not t.user_attrs.get("baseline") and t.values]
    assert trained, [t.user_attrs for t in trials]
    best_value = max(t.values[0] for t in trained)
    baseline = next(t for t in trials if t.user_attrs.get("baseline"))
    assert best_value > baseline.values[0] + 0.2  # the trials did learn the task
    most_accurate = max(trained, key=lambda t: t.values[0])
    assert most_accurate.user_attrs["broken"] >= 8
    assert most_accurate.user_attrs["stop_reason"].startswith("over budget: flips")
    assert most_accurate.constraints["flips"] > 0
    config = yaml.safe_load((out / "best" / "config.yaml").read_text())
    assert config["trial"] != most_accurate.number
    assert config["errors"]["validation"]["broken"] <= 3
    assert config["metrics"]["test_broken"] is not None  # the exported model, on the test split
    row = next(r for r in Leaderboard.from_study(result.study, "accuracy").rows if r.number == 1)
    assert row.flips == (trials[1].user_attrs["fixed"], trials[1].user_attrs["broken"])


def test_pareto_flips_sets_the_metric_against_the_negative_flips(
    tiny_model: nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    space = load_space({"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "fit": {"max_epochs": 3}})
    settings = SearchSettings(out=tmp_path, trials=2, pareto="flips")
    job = Job.from_objects(tiny_model, tiny_data)
    study = Search(job, space, settings, console=Console(file=io.StringIO())).run()
    assert study.directions[1] == optuna.study.StudyDirection.MINIMIZE
    scored = [t for t in study.trials if t.values]
    assert len(scored) == 3  # the baseline and two trials
    for trial in scored:
        assert trial.values[1] == trial.user_attrs["broken"]


def test_stage_two_slims_the_best_full_size_model_within_the_flip_budget() -> None:
    from optuna.trial import create_trial

    from autotune.search.stages import parent_of

    study = optuna.create_study(direction="maximize")
    for value, over in ((0.95, 2.0), (0.90, -0.5), (0.85, 0.0)):
        study.add_trial(create_trial(value=value, system_attrs={"constraints:flips": over}))
    parent = parent_of(study, "accuracy")
    assert parent is not None and parent.values[0] == 0.90  # 0.95 broke too many
    unbudgeted = optuna.create_study(direction="maximize")
    unbudgeted.add_trial(create_trial(value=0.7))
    unbudgeted.add_trial(create_trial(value=0.8))
    best = parent_of(unbudgeted, "accuracy")
    assert best is not None and best.values[0] == 0.8
