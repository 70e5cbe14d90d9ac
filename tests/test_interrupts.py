"""Signals at the moments a search is most fragile: while Optuna records a trial's start or end,
inside a storage call, while a file is written, at the end of a search."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import TrialState
from rich.console import Console

from autotune import search
from autotune.interrupts import (
    TERMINATIONS,
    Terminated,
    deferred,
    exit_code,
    stop_on_termination,
)
from autotune.load.tasks import TaskData
from autotune.search.study import load_study
from autotune.search.trials import finished

QUICK = {"lr": {"low": 1e-3, "high": 3e-2, "log": True}, "fit": {"max_epochs": 2, "patience": 2}}
# Four epochs: a signal sent in epoch 2 leaves epochs after it to stop.
LONGER = {**QUICK, "fit": {"max_epochs": 4, "patience": 4}}


@pytest.fixture(autouse=True)
def ctrl_c_heard() -> Iterator[None]:
    """A Ctrl-C raises ``KeyboardInterrupt``, as in a terminal: a process a shell without job
    control started in the background inherits SIGINT ignored, and these tests then failed."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _study(out: Path) -> optuna.Study:
    """The study a search left in its default study file in ``out``."""
    return load_study(None, out)


def _ctrl_c_on(monkeypatch: pytest.MonkeyPatch, method: str, when: Any) -> None:
    """A Ctrl-C just after the first call of the default study file's storage ``method`` with
    arguments ``when`` accepts: inside Optuna's own code, before the objective starts or after
    it returned."""
    original = getattr(JournalStorage, method)
    sent: list[bool] = []

    def interrupted(self: JournalStorage, *args: Any, **kwargs: Any) -> Any:
        done = original(self, *args, **kwargs)
        if not sent and when(*args, **kwargs):
            sent.append(True)
            signal.raise_signal(signal.SIGINT)
        return done

    monkeypatch.setattr(JournalStorage, method, interrupted)


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
    return _study(tmp_path)


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
    from autotune.results import finish

    export = finish.export_trial

    def terminated_first(*args: Any, **kwargs: Any) -> Any:
        signal.raise_signal(signal.SIGTERM)
        return export(*args, **kwargs)

    monkeypatch.setattr(finish, "export_trial", terminated_first)
    console = Console(file=io.StringIO())
    with pytest.raises(Terminated) as stop:
        search(tiny_model, tiny_data, out=tmp_path, console=console, space=QUICK, trials=2)
    assert exit_code(stop.value) == 143
    assert (tmp_path / "best" / "model.pt2").is_file() and (tmp_path / "report.html").is_file()
    study = _study(tmp_path)
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
    from autotune.interrupts import held

    with pytest.raises(Terminated), deferred():
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
    with held():
        pass  # no signal pending: nothing raised


def test_a_sigterm_inside_a_storage_call_waits_for_its_end_and_the_results_are_written(
    terminations: None,
    tiny_model: torch.nn.Module,
    tiny_data: TaskData,
    tmp_path: Path,
) -> None:
    """A scheduler's SIGTERM while a trial reads the study (here: while a row is loaded, as
    another worker writes): the call ends first, then the trial stops as interrupted. Stopped
    inside the call, SQLite kept the half-read statement open, and the writes of the search's
    end failed with "database is locked"."""
    import sqlite3

    from optuna.storages._rdb import models
    from sqlalchemy import event

    state = {"epoch": 0, "sent": False}
    report = _CachedStorage.set_trial_intermediate_value

    def counted(self: _CachedStorage, *args: Any, **kwargs: Any) -> Any:
        state["epoch"] += 1
        return report(self, *args, **kwargs)

    def loaded(target: Any, context: Any) -> None:
        if state["epoch"] == 2 and not state["sent"]:
            state["sent"] = True
            with sqlite3.connect(tmp_path / "study.db") as other:  # another worker's write
                other.execute("UPDATE studies SET study_name = study_name")
            signal.raise_signal(signal.SIGTERM)

    event.listen(models.TrialModel, "load", loaded)
    try:
        with pytest.MonkeyPatch.context() as m:
            m.setattr(_CachedStorage, "set_trial_intermediate_value", counted)
            with pytest.raises(Terminated):
                console = Console(file=io.StringIO())
                search(
                    tiny_model, tiny_data, out=tmp_path, console=console, space=LONGER, trials=2,
                    storage=f"sqlite:///{tmp_path / 'study.db'}",  # what the row loading is of
                )  # fmt: skip
    finally:
        event.remove(models.TrialModel, "load", loaded)
    assert state["sent"]
    study = _study(tmp_path)
    stopped = [t for t in study.get_trials() if t.user_attrs.get("interrupted")]
    assert len(stopped) == 1 and stopped[0].state == TrialState.FAIL
    # Epoch 2's report, which the signal fell in, was recorded whole; no epoch 3 began.
    assert sorted(stopped[0].intermediate_values) == [1, 2]
    assert (tmp_path / "report.html").is_file()


def test_a_sigterm_while_a_checkpoint_is_written_stops_the_trial_once_the_file_is_whole(
    terminations: None,
    tiny_model: torch.nn.Module,
    tiny_data: TaskData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torch.save writes through the file's ``write`` from C++. A signal raised there stopped the
    trial with its checkpoint unwritten (here: the next run started it over), or, at the file's
    end, became "unexpected pos": the trial failed and the search went on. The trial now stops
    as interrupted once the checkpoint is whole, and the next run continues it."""
    from autotune import paths

    class Signalled(io.BufferedWriter):
        sent = False

        def write(self, data: Any) -> int:
            if not Signalled.sent:
                Signalled.sent = True
                signal.raise_signal(signal.SIGTERM)
            return super().write(data)

    def opened(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode == "xb" and "resume_" in str(file):
            return Signalled(io.FileIO(file, mode))
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(paths, "open", opened, raising=False)
    settings = {"space": LONGER, "trials": 2}
    with pytest.raises(Terminated):
        search(tiny_model, tiny_data, out=tmp_path, console=Console(file=io.StringIO()),
               checkpoint_every=1e-9, **settings)  # fmt: skip
    assert Signalled.sent
    study = _study(tmp_path)
    assert not [t for t in study.get_trials() if t.user_attrs.get("fail_reason")]
    [stopped] = [t for t in study.get_trials() if t.user_attrs.get("interrupted")]
    [kept] = list(tmp_path.glob("checkpoints/*/resume_*.pt"))
    assert torch.load(kept, weights_only=True)["loop"]["epoch"] == 1
    monkeypatch.undo()
    search(tiny_model, tiny_data, out=tmp_path, console=Console(file=io.StringIO()),
           checkpoint_every=1e-9, **settings)  # fmt: skip
    again = _study(tmp_path)
    resumed = [t for t in again.get_trials() if t.user_attrs.get("resumes") == stopped.number]
    assert [t.user_attrs.get("resumed_after") for t in resumed] == [1]


def test_a_signal_held_by_a_block_that_fails_still_stops_and_is_not_left_pending(
    terminations: None,
) -> None:
    """A storage call that fails while a SIGTERM waits for it: the stop follows, with the error
    as its context, and no signal is left for a later search in the same process."""
    from autotune.interrupts import held

    with pytest.raises(Terminated) as stop, held():
        signal.raise_signal(signal.SIGTERM)
        raise OSError("the storage went away")
    assert isinstance(stop.value.__context__, OSError)
    with held():
        pass  # no signal pending: nothing raised


def test_a_hangup_ignored_by_nohup_stays_ignored(terminations: None) -> None:
    """``nohup autotune search ...``: the user asked that a closed terminal not stop it."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    stop_on_termination()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN  # still stops the search
