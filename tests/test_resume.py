"""Resuming a study: exact totals, trials of dead workers, re-runs with other settings."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState
from rich.console import Console

from autotune import search
from autotune.errors import StorageError
from autotune.load.tasks import TaskData
from autotune.search.study import best_trial
from autotune.search.trials import finished, is_surplus, within_total

QUICK = {
    "lr": {"low": 1e-3, "high": 3e-2, "log": True},
    "batch_size": [16, 32],
    "fit": {"max_epochs": 2, "patience": 2},
}


def _search(model: torch.nn.Module, data: TaskData, out: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("space", QUICK)
    return search(model, data, out=out, console=Console(file=io.StringIO()), **kwargs)


def _orphan(study: optuna.Study, worker: str) -> int:
    """A RUNNING trial left by ``worker``, as a kill -9 leaves it."""
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True)})
    trial.set_user_attr("worker", worker)
    return trial.number


def test_a_dead_workers_trial_is_failed_retried_and_the_total_is_exact(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    first = _search(tiny_model, tiny_data, tmp_path, trials=2, pruner="none")
    import socket

    # pid 2**22 + 1 is above Linux's pid_max: no live process has it.
    dead = _orphan(first.study, f"{socket.gethostname()}:{2**22 + 1}")
    again = _search(tiny_model, tiny_data, tmp_path, trials=3, pruner="none")
    trials = again.study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[dead].state == TrialState.FAIL
    assert "died" in trials[dead].user_attrs["fail_reason"]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params["lr"] == trials[dead].params["lr"]
    assert finished(again.study) == 3
    assert len(trials) == 1 + 3 + 1  # baseline, three counted trials, the dead one


def test_a_running_trial_of_another_machine_counts_as_started(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    # A journal file has no heartbeat: the exporting worker does not wait for that trial.
    journal = str(tmp_path / "journal.log")
    first = _search(tiny_model, tiny_data, tmp_path, trials=1, pruner="none", storage=journal)
    other = _orphan(first.study, "another-host:1")
    again = _search(tiny_model, tiny_data, tmp_path, trials=3, pruner="none", storage=journal)
    trials = again.study.get_trials()
    assert trials[other].state == TrialState.RUNNING
    # Only one more trial ran: with the other machine's, the study has started three.
    assert finished(again.study) == 2


def test_a_trial_started_after_the_total_was_reached_is_a_surplus(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"baseline": True}))
    first, second = study.ask(), study.ask()
    assert not is_surplus(study, first.number, 1)
    assert is_surplus(study, second.number, 1)
    assert not is_surplus(study, second.number, 2)


def test_a_surplus_trial_is_stopped_marked_and_not_counted(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    study.enqueue_trial({"x": 0.5})
    objective = within_total(lambda t: t.suggest_float("x", 0, 1), study, 2)
    study.optimize(objective, n_trials=1)
    running = study.ask()  # as another worker that looked at the same moment
    study.optimize(objective, n_trials=1, catch=(Exception,))
    surplus = study.trials[-1]
    assert surplus.state == TrialState.FAIL and surplus.user_attrs["surplus"]
    assert "another worker" in surplus.user_attrs["fail_reason"]
    study.tell(running, 0.1)
    assert finished(study) == 2  # exactly the total: the first and the other worker's


def test_a_rerun_with_other_settings_is_refused_with_what_changed(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    _search(tiny_model, tiny_data, tmp_path, trials=1, seed=0)
    with pytest.raises(StorageError) as error:
        _search(tiny_model, tiny_data, tmp_path, trials=2, seed=1, max_epochs=3)
    message = str(error.value)
    assert "--epochs 2 -> 3" in message and "--seed 0 -> 1" in message
    assert "--allow-changes" in message


def test_allowed_changes_apply_the_new_budget_to_old_trials(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    first = _search(tiny_model, tiny_data, tmp_path, trials=2, pruner="none")
    assert first.best is not None  # without a budget, the old trials qualify
    # No trial of this space slims the model: under a 50% budget none qualifies, old or new.
    again = _search(tiny_model, tiny_data, tmp_path, trials=3, max_params="50%", allow_changes=True)
    assert best_trial(again.study) is None and again.best is None
    record = again.study.user_attrs["autotune"]
    assert record["settings"]["max_params"] == "50%"
    assert record["changes"][0]["changed"] == ["--max-params None -> 50%"]
