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
from autotune.search.study import best_trial, load_study
from autotune.search.trials import finished, is_surplus, within_total

QUICK = {
    "lr": {"low": 1e-3, "high": 3e-2, "log": True},
    "batch_size": [16, 32],
    "fit": {"max_epochs": 2, "patience": 2},
}


def _search(model: torch.nn.Module, data: TaskData, out: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("space", QUICK)
    return search(model, data, out=out, console=Console(file=io.StringIO()), **kwargs)


def _orphan(study: optuna.Study, worker: object) -> int:
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
    # A space that can slim the model below 50% (a budget no model of it can meet is refused
    # before the search), run for one trial: the standard recipe, at full size.
    space = {**QUICK, "prune": {"low": 0.0, "high": 0.8}, "importance": ["l1"]}
    first = _search(tiny_model, tiny_data, tmp_path, space=space, trials=1, pruner="none")
    assert first.best is not None  # without a budget, the old trial qualifies
    again = _search(
        tiny_model, tiny_data, tmp_path, space=space, trials=1, max_params="50%",
        allow_changes=True,
    )  # fmt: skip
    assert best_trial(again.study) is None and again.best is None
    record = again.study.user_attrs["autotune"]
    assert record["settings"]["max_params"] == "50%"
    assert record["changes"][0]["changed"] == ["--max-params None -> 50%"]


def _rerun_within(seconds: int, *args: Any, **kwargs: Any) -> Any:
    """``_search(*args, **kwargs)``, stopped (and the test failed) if it takes ``seconds``."""
    import signal

    class Hung(BaseException):
        pass

    def hung(signum: int, frame: object) -> None:
        raise Hung(f"the search still ran after {seconds} s: it waits for a dead worker")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        return _search(*args, **kwargs)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _failed_and_retried(study: optuna.Study, number: int) -> None:
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[number].state == TrialState.FAIL
    assert trials[number].user_attrs["fail_reason"] == "its worker died; retried"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE


def _earlier_run_of_this_pid(kind: str) -> Any:
    """How an earlier process that had this process's pid recorded itself on its trials."""
    import os
    import socket

    from autotune.search.identity import WORKER

    if kind == "run id":  # as a restarted container leaves it: the same pid, another run
        return {**WORKER, "run": "0123456789abcdef"}
    return f"{socket.gethostname()}:{os.getpid()}"  # studies written before run ids


@pytest.mark.parametrize("kind", ["run id", "host:pid"])
def test_a_trial_of_this_pid_with_another_run_id_is_failed_and_retried(
    kind: str, tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    first = _search(tiny_model, tiny_data, tmp_path, trials=2, pruner="none")
    dead = _orphan(first.study, _earlier_run_of_this_pid(kind))
    again = _rerun_within(120, tiny_model, tiny_data, tmp_path, trials=3, pruner="none")
    _failed_and_retried(again.study, dead)
    assert finished(again.study) == 3


def test_a_live_process_that_took_a_dead_workers_pid_is_not_waited_for(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    import subprocess

    from autotune.search.identity import WORKER, start_time

    first = _search(tiny_model, tiny_data, tmp_path, trials=2, pruner="none")
    unrelated = subprocess.Popen(["sleep", "600"])
    try:
        started = start_time(unrelated.pid)
        assert started is not None
        # The dead worker had that pid, and started at another time.
        record = {**WORKER, "run": "0123456789abcdef", "pid": unrelated.pid}
        dead = _orphan(first.study, {**record, "started": started - 1})
        again = _rerun_within(120, tiny_model, tiny_data, tmp_path, trials=3, pruner="none")
        assert unrelated.poll() is None  # it ran throughout, and was left alone
    finally:
        unrelated.kill()
        unrelated.wait()
    _failed_and_retried(again.study, dead)
    assert finished(again.study) == 3


def test_a_live_worker_of_this_machine_is_waited_for_and_a_reused_pid_is_not(
    tmp_path: Path,
) -> None:
    import subprocess

    from autotune.search.identity import WORKER, start_time
    from autotune.search.trials import fail_orphans, running_elsewhere

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    other = subprocess.Popen(["sleep", "600"])
    try:
        record = {**WORKER, "run": "0123456789abcdef", "pid": other.pid}
        live = _orphan(study, {**record, "started": start_time(other.pid)})
        reused = _orphan(study, {**record, "started": -1.0})
        assert fail_orphans(study) == [reused]
        assert [t.number for t in running_elsewhere(study)] == [live]
    finally:
        other.kill()
        other.wait()
    # Once it has exited, its trial is failed and retried.
    assert fail_orphans(study) == [live] and running_elsewhere(study) == []


def test_a_retry_whose_worker_died_too_is_left_failed_and_says_so(tmp_path: Path) -> None:
    import socket

    from autotune.search.trials import fail_orphans

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    dead = f"{socket.gethostname()}:{2**22 + 1}"  # above Linux's pid_max: no live process
    first = _orphan(study, dead)
    assert fail_orphans(study) == [first]
    retry = study.ask()  # the queued retry, taken by a worker that dies as well
    assert study.trials[retry.number].system_attrs["failed_trial"] == first
    retry.set_user_attr("worker", dead)
    assert fail_orphans(study) == [retry.number]
    trials = study.get_trials()
    assert trials[first].user_attrs["fail_reason"] == "its worker died; retried"
    reason = trials[retry.number].user_attrs["fail_reason"]
    assert reason == "its worker died; not retried: it may be what kills it"
    assert len(trials) == 2  # nothing queued a third time
    assert trials[retry.number].state == TrialState.FAIL


def test_the_leaderboard_says_a_worker_died_without_naming_its_host(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    import csv
    import socket

    first = _search(tiny_model, tiny_data, tmp_path, trials=1, pruner="none")
    worker = f"{socket.gethostname()}:{2**22 + 1}"  # a pid above Linux's pid_max: dead
    dead = _orphan(first.study, worker)
    _search(tiny_model, tiny_data, tmp_path, trials=2, pruner="none")
    board = (tmp_path / "leaderboard.csv").read_text()
    assert worker not in board and str(2**22 + 1) not in board
    if len(socket.gethostname()) >= 6:  # a short name could occur by chance
        assert socket.gethostname() not in board
    rows = {int(r["trial"]): r for r in csv.DictReader(board.splitlines())}
    assert rows[dead]["note"] == "its worker died; retried"


STAGED = {
    "lr": {"low": 1e-3, "high": 3e-2, "log": True},
    "unfreeze": {"low": 1, "high": "all"},
    "unfreeze_order": ["output", "shap"],
    "prune": {"low": 0.0, "high": 0.5},
    "analysis": {"samples": 16, "background": 4, "nsamples": 2},
    "fit": {"max_epochs": 2, "patience": 2},
}


def test_a_recipe_trial_stopped_by_ctrl_c_is_trained_as_the_recipe_by_the_next_run(
    tiny_model: torch.nn.Module,
    tiny_data: TaskData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import signal

    from autotune.results.live import LiveLeaderboard
    from autotune.search.trials import RECIPE

    def ctrl_c(self: LiveLeaderboard, number: int, doing: str) -> None:
        signal.raise_signal(signal.SIGINT)

    # Staged: the rankings' seed runs first on the rerun and completes stage 1, so the recipe
    # runs again under a stage-2 number, with a parent to slim at hand.
    with monkeypatch.context() as patch:
        patch.setattr(LiveLeaderboard, "progress", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            _search(tiny_model, tiny_data, tmp_path, space=STAGED, trials=2, pruner="none")
    stopped = load_study(None, tmp_path)
    first = stopped.trials[1]
    assert first.user_attrs[RECIPE] and first.user_attrs["interrupted"]

    again = _search(tiny_model, tiny_data, tmp_path, space=STAGED, trials=2, pruner="none")
    recipes = [t for t in again.study.trials if t.user_attrs.get(RECIPE)]
    done = [t for t in recipes if t.state == TrialState.COMPLETE]
    assert len(done) == 1 and done[0].number > 1
    assert done[0].params == first.params  # the recipe's own: lr 1e-3, every layer trained
    assert done[0].params["lr"] == pytest.approx(1e-3)
    assert done[0].user_attrs["stage"] == 1 and done[0].user_attrs["config"]["prune"] == 0.0
    assert done[0].user_attrs["config"]["lr"] == pytest.approx(1e-3)
    assert finished(again.study) == 2


def test_the_retry_of_a_recipe_trial_whose_worker_died_is_the_recipe(
    tiny_model: torch.nn.Module,
    tiny_data: TaskData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    from autotune.results.live import LiveLeaderboard
    from autotune.search.trials import RECIPE

    class Killed(BaseException):
        """Ends the search where it is, leaving its trial RUNNING, as a kill -9 would."""

    def die(self: LiveLeaderboard, number: int, doing: str) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(LiveLeaderboard, "progress", die)
        with pytest.raises(Killed):
            _search(tiny_model, tiny_data, tmp_path, trials=2, pruner="none")
    study = load_study(None, tmp_path)
    dead = study.trials[1]
    assert dead.state == TrialState.RUNNING and dead.user_attrs[RECIPE]
    study._storage.set_trial_user_attr(
        dead._trial_id, "worker", f"{socket.gethostname()}:{2**22 + 1}"
    )

    again = _search(tiny_model, tiny_data, tmp_path, trials=2, pruner="none")
    retry = next(t for t in again.study.trials if t.system_attrs.get("failed_trial") == 1)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs.get(RECIPE)
    assert retry.params == again.study.trials[1].params
    assert retry.params["lr"] == pytest.approx(1e-3)
