"""How a search starts and what it picks: the space chosen for the model, the standard recipe
as the first trained trial, and a held-out split read only for the chosen model."""

from __future__ import annotations

import io
import time
from pathlib import Path

import optuna
import pytest
import torch
from conftest import TinyNet, blobs
from optuna.trial import TrialState
from rich.console import Console
from torch import nn

from autotune import search
from autotune.load.job import Job
from autotune.load.tasks import TaskData, from_tensors
from autotune.results import export
from autotune.search import runner
from autotune.search.prepare import space_for
from autotune.search.study import best_trial
from autotune.trial import fit

FAST = {"fit": {"max_epochs": 3, "patience": 3}}


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def _data() -> TaskData:
    x, y = blobs(300)
    return from_tensors(
        x[:200], y[:200], x_val=x[200:260], y_val=y[200:260], x_test=x[260:], y_test=y[260:]
    )


def test_the_space_follows_the_model() -> None:
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    images = from_tensors(torch.rand(20, 1, 8, 8), torch.arange(20) % 3)
    assert space_for(Job.from_objects(conv, images))[0] == "vision"
    assert space_for(Job.from_objects(TinyNet(), _data()))[0] == "tabular"


def test_a_search_without_a_space_runs_the_shap_analysis(tmp_path: Path) -> None:
    torch.manual_seed(0)
    console = _quiet()
    result = search(
        TinyNet().eval(), _data(), trials=2, out=tmp_path, console=console, max_epochs=2
    )
    assert result.search.space.source == "tabular"
    assert "shap" in result.analyses
    assert "space: tabular" in console.file.getvalue()  # type: ignore[attr-defined]


def test_the_first_trained_trial_is_the_standard_recipe(tmp_path: Path) -> None:
    torch.manual_seed(0)
    space = {"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "batch_size": [16, 64], **FAST}
    result = search(TinyNet().eval(), _data(), space=space, trials=4, out=tmp_path,
                    console=_quiet())  # fmt: skip
    first = result.study.trials[1]
    assert first.state == TrialState.COMPLETE
    # lr as the recipe says; batch 32 is not in the space, so the nearest choice.
    assert first.params == {"lr": 1e-3, "batch_size": 16}
    best = result.best
    assert best is not None
    assert best.config["metrics"]["val_accuracy"] >= first.user_attrs["val_accuracy"]


def test_the_test_split_is_scored_once_for_the_chosen_model_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data()
    reads: list[float] = []

    def spying(evaluate):  # type: ignore[no-untyped-def]
        def wrapper(model, x, y, *rest):  # type: ignore[no-untyped-def]
            test = data.x_test
            if test is not None and x.shape == test.shape and torch.equal(x.cpu(), test):
                reads.append(time.time())
            return evaluate(model, x, y, *rest)

        return wrapper

    for module in (fit, runner, export):
        monkeypatch.setattr(module, "evaluate", spying(module.evaluate))
    torch.manual_seed(0)
    space = {"lr": {"low": 1e-3, "high": 3e-2, "log": True}, **FAST}
    result = search(TinyNet().eval(), data, space=space, trials=4, out=tmp_path, console=_quiet())
    assert all("test_accuracy" not in t.user_attrs for t in result.study.trials)
    assert len(reads) == 1
    finished = [t.datetime_complete for t in result.study.trials if t.datetime_complete]
    assert reads[0] >= max(finished).timestamp()
    assert result.best_config is not None
    assert result.best_config["metrics"]["test_accuracy"] is not None


def test_refit_trains_the_chosen_configuration_on_train_and_validation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    space = {"lr": {"low": 1e-3, "high": 3e-2, "log": True}, **FAST}
    result = search(
        TinyNet().eval(), _data(), space=space, trials=2, out=tmp_path, console=_quiet(), refit=True
    )
    config = result.best_config
    assert config is not None
    chosen = result.study.trials[config["trial"]]
    epochs = chosen.user_attrs["best_epoch"]
    assert config["weights"].startswith(
        f"refit on the training and validation samples (260) for {epochs} epochs"
    )
    assert config["metrics"]["validation_held_out"] is False
    assert config["metrics"]["test_accuracy"] is not None


def test_a_timeout_stops_starting_trials(tmp_path: Path) -> None:
    torch.manual_seed(0)
    space = {"lr": {"low": 1e-3, "high": 3e-2, "log": True}, **FAST}
    result = search(
        TinyNet().eval(), _data(), space=space, trials=50, out=tmp_path, console=_quiet(),
        timeout=0.5,
    )  # fmt: skip
    finished = [t for t in result.study.trials if not t.user_attrs.get("baseline")]
    assert 1 <= len(finished) < 50
    assert result.best is not None


def test_trials_tied_on_accuracy_rank_by_validation_loss() -> None:
    study = optuna.create_study(direction="maximize")
    for acc, loss in [(0.9, 0.5), (0.95, 0.40), (0.95, 0.20), (0.95, 0.30)]:
        study.add_trial(
            optuna.trial.create_trial(value=acc, user_attrs={"val_accuracy": acc, "val_loss": loss})
        )
    best = best_trial(study)
    assert best is not None and best.number == 2
    minimised = optuna.create_study(direction="minimize")
    for acc, loss in [(0.8, 0.3), (0.9, 0.3), (0.7, 0.4)]:
        minimised.add_trial(
            optuna.trial.create_trial(
                value=loss, user_attrs={"val_accuracy": acc, "val_loss": loss}
            )
        )
    best = best_trial(minimised)
    assert best is not None and best.number == 1
