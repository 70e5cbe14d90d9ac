"""Ctrl-C at the moments a search is most fragile: while Optuna records a trial's start or end."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import TrialState
from rich.console import Console

from autotune import search
from autotune.load.tasks import TaskData
from autotune.search.interrupts import (
    TERMINATIONS,
    Terminated,
    deferred,
    exit_code,
    stop_on_termination,
)
from autotune.search.trials import finished

QUICK = {"lr": {"low": 1e-3, "high": 3e-2, "log": True}, "fit": {"max_epochs": 2, "patience": 2}}


def _ctrl_c_on(monkeypatch: pytest.MonkeyPatch, method: str, when: Any) -> None:
    """A Ctrl-C just after the first call of Optuna's storage ``method`` with arguments ``when``
    accepts: inside Optuna's own code, before the objective starts or after it returned."""
    original = getattr(_CachedStorage, method)
    sent: list[bool] = []

    def interrupted(self: _CachedStorage, *args: Any, **kwargs: Any) -> Any:
        done = original(self, *args, **kwargs)
        if not sent and when(*args, **kwargs):
            sent.append(True)
            signal.raise_signal(signal.SIGINT)
        return done

    monkeypatch.setattr(_CachedStorage, method, interrupted)


def _search_stopped_when_optuna_sets(
    wanted: TrialState,
    tiny_model: torch.nn.Module,
    tiny_data: TaskData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> optuna.Study:
    """A search given a Ctrl-C just after Optuna first sets a trial's state to ``wanted``; the
    study it leaves."""
    sets = lambda trial_id, state, values=None: state == wanted  # noqa: E731
    _ctrl_c_on(monkeypatch, "set_trial_state_values", sets)
    console = Console(file=io.StringIO())
    with pytest.raises(KeyboardInterrupt):
        search(tiny_model, tiny_data, out=tmp_path, console=console, space=QUICK, trials=3)
    return optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'study.db'}")


def test_a_ctrl_c_while_optuna_records_a_trials_end_stops_once_it_is_recorded(
    tiny_model: torch.nn.Module,
    tiny_data: TaskData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study = _search_stopped_when_optuna_sets(
        TrialState.COMPLETE, tiny_model, tiny_data, tmp_path, monkeypatch
    )
    trials = study.get_trials()
    # The trial it was recording completed, and the search stopped before starting another.
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert finished(study) == 1


def test_a_ctrl_c_while_optuna_starts_a_trial_stops_it_as_interrupted(
    tiny_model: torch.nn.Module,
    tiny_data: TaskData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The recipe trial, queued, starts when Optuna's ``ask`` sets it RUNNING.
    study = _search_stopped_when_optuna_sets(
        TrialState.RUNNING, tiny_model, tiny_data, tmp_path, monkeypatch
    )
    started = study.get_trials()[1]
    assert started.state == TrialState.FAIL and started.user_attrs["interrupted"]
    assert finished(study) == 0


@pytest.fixture
def terminations() -> Iterator[None]:
    """SIGTERM and SIGHUP handled as the command line handles them, for one test."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, *TERMINATIONS)}
    stop_on_termination()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_sigterm_at_the_end_of_a_search_waits_for_the_bundle_then_stops_it(
    terminations: None,
    tiny_model: torch.nn.Module,
    tiny_data: TaskData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scheduler stopping the job while the search writes its results: they are written, then
    the search stops (the command exits 143)."""
    from autotune import api

    export = api.export_trial

    def terminated_first(*args: Any, **kwargs: Any) -> Any:
        signal.raise_signal(signal.SIGTERM)
        return export(*args, **kwargs)

    monkeypatch.setattr(api, "export_trial", terminated_first)
    console = Console(file=io.StringIO())
    with pytest.raises(Terminated) as stop:
        search(tiny_model, tiny_data, out=tmp_path, console=console, space=QUICK, trials=2)
    assert exit_code(stop.value) == 143
    assert (tmp_path / "best" / "model.pt2").is_file() and (tmp_path / "report.html").is_file()
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert finished(study) == 2 and not study.get_trials(states=(TrialState.RUNNING,))


def test_a_second_signal_stops_the_end_of_a_search_at_once(terminations: None) -> None:
    written: list[str] = []
    with pytest.raises(Terminated) as stop, deferred():
        signal.raise_signal(signal.SIGTERM)  # waits for the block
        signal.raise_signal(signal.SIGHUP)  # does not
        written.append("the rest of the bundle")
    assert not written and exit_code(stop.value) == 129


def test_a_signal_that_stopped_the_end_of_a_search_is_not_delivered_again(
    terminations: None,
) -> None:
    """After a second signal stopped ``deferred``, the first is not left waiting for the next
    Optuna call of a later search in the same process (a notebook)."""
    from autotune.search.interrupts import held

    with pytest.raises(Terminated), deferred():
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
    with held():
        pass  # no signal pending: nothing raised
