"""The objective reports every epoch to Optuna's pruner and obeys it."""

from __future__ import annotations

from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from autotune.config import SearchSettings
from autotune.load.job import Job
from autotune.load.tasks import TaskData
from autotune.search.runner import Search
from autotune.search.space import load_space

SPACE = {"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "fit": {"max_epochs": 4, "patience": 4}}


def _objective(model: torch.nn.Module, data: TaskData, out: Path):  # type: ignore[no-untyped-def]
    run = Search(Job.from_objects(model, data), load_space(SPACE), SearchSettings(out=out))
    run.prepare()
    return run.objective()


def test_every_epoch_is_reported_to_the_pruner(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    study.optimize(_objective(tiny_model, tiny_data, tmp_path), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE
    epochs = trial.user_attrs["epochs"]
    assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
    history = [h["val_accuracy"] for h in trial.user_attrs["history"]]
    assert list(trial.intermediate_values.values()) == history


def test_the_pruner_stops_a_hopeless_trial_after_its_first_epoch(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    # No accuracy reaches 2, so the threshold pruner stops the trial at its first report.
    pruner = optuna.pruners.ThresholdPruner(lower=2.0)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    study.optimize(_objective(tiny_model, tiny_data, tmp_path), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["stop_reason"] == "pruned after epoch 1"
    assert list(trial.intermediate_values) == [1]
