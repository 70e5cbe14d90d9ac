"""A full disk or a lost storage in the middle of a search: one line and a non-zero exit code,
no file left half-written, the finished trials kept, and the same command goes on from them."""

from __future__ import annotations

import builtins
import errno
import inspect
import io
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc
from conftest import write_cli_job
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

from autotune import search
from autotune.cli import app
from autotune.load.tasks import TaskData
from autotune.search import objective
from autotune.search.study import load_study
from autotune.search.trials import finished

SPACE = "lr: {low: 0.001, high: 0.03, log: true}\nfit: {max_epochs: 2, patience: 2}\n"


def _job(folder: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``autotune search`` options for a tiny model and data in ``folder``, the cwd."""
    monkeypatch.chdir(folder)
    return [*write_cli_job(folder, tensors_file, SPACE), "--pruner", "none", "--out", "out"]


def _search(args: list[str], trials: int) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["search", *args, "--trials", str(trials)])
    return result.exit_code, result.output


def _trials() -> list[optuna.trial.FrozenTrial]:
    return load_study(None, Path("out"), "net").get_trials()


def _told_in_one_line(output: str, says: str) -> None:
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert [line for line in lines if "error" in line.lower()] == [lines[-1]], output
    assert says in lines[-1] and "run the same command again" in lines[-1], output


class _Filling(io.RawIOBase):
    """A file on a disk that fills up: a few bytes go in, then there is no room."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.file.write(data[:5])
        self.file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fileno")  # no way around write() to the disk

    def close(self) -> None:
        self.file.close()
        super().close()


def _disk_full_for(monkeypatch: pytest.MonkeyPatch, full: Callable[[Path], bool]) -> None:
    """From now on the disk has no room for the files that are ``full``: every other file is
    written as usual."""
    real = builtins.open

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real(file, mode, *args, **kwargs)
        path = Path(os.fsdecode(file)) if isinstance(file, (str, bytes, os.PathLike)) else None
        if path is not None and any(c in mode for c in "wxa") and full(path):
            return _Filling(f) if "b" in mode else io.TextIOWrapper(_Filling(f))
        return f

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)


def _disk_full_for_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """No room for ``report.html`` and ``report/*.png``."""
    _disk_full_for(monkeypatch, lambda p: "report" in p.name or p.parent.name == "report")


def _report_files() -> dict[str, bytes]:
    out = Path("out")
    return {str(p): p.read_bytes() for p in [out / "report.html", *out.glob("report/*")]}


def _no_partial_file() -> None:
    files = [p for p in Path("out").rglob("*") if p.is_file()]
    assert not [p for p in files if ".part" in p.name]
    assert not [p for p in files if p.stat().st_size == 0]


def test_a_full_disk_at_the_report_is_one_line_and_leaves_no_partial_file(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _job(tmp_path, tensors_file, monkeypatch)
    with monkeypatch.context() as full:
        _disk_full_for_the_report(full)
        code, output = _search(args, trials=1)
    assert code != 0
    _told_in_one_line(output, "the disk is full")
    assert not Path("out/report.html").exists()  # no file where there was none
    _no_partial_file()
    assert [t.state for t in _trials()] == [TrialState.COMPLETE] * 2  # baseline, trial 1
    # With room again, the same command writes what was missing.
    code, output = _search(args, trials=1)
    assert code == 0, output
    before = _report_files()
    assert len(before) > 1 and all(before.values())
    first = _trials()[1]
    # The disk fills up again while the next run writes its report: the good one stays.
    with monkeypatch.context() as full:
        _disk_full_for_the_report(full)
        code, output = _search(args, trials=2)
    assert code != 0
    _told_in_one_line(output, "the disk is full")
    assert _report_files() == before
    _no_partial_file()
    trials = _trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert trials[1].datetime_complete == first.datetime_complete


def _lose_the_storage_at(monkeypatch: pytest.MonkeyPatch, report: int) -> None:
    """The study's database goes away at the ``report``-th epoch a trial reports: from then on
    every storage call fails, as when a PostgreSQL server stops."""
    reports = {"n": 0}

    def failing(name: str, method: Any) -> Any:
        def call(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
            reports["n"] += name == "set_trial_intermediate_value"
            if reports["n"] >= report:
                cause = Exception("server closed the connection unexpectedly")
                raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, cause)
            return method(self, *args, **kwargs)

        return call

    for name, method in inspect.getmembers(RDBStorage, inspect.isfunction):
        if not name.startswith("_") and not isinstance(
            inspect.getattr_static(RDBStorage, name), staticmethod
        ):
            monkeypatch.setattr(RDBStorage, name, failing(name, method))
    # The next run is another process: the trial left running has a worker that is gone
    # (pid 2**22 + 1 is above Linux's pid_max).
    monkeypatch.setattr(objective, "WORKER", f"{socket.gethostname()}:{2**22 + 1}")


def test_a_storage_lost_mid_search_is_one_line_and_the_same_command_goes_on(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database (the default journal file has no server to lose).
    args = [*_job(tmp_path, tensors_file, monkeypatch), "--storage", "sqlite:///out/study.db"]
    with monkeypatch.context() as lost:
        _lose_the_storage_at(lost, report=3)  # trial 1 reports epochs 1 and 2; trial 2 dies
        code, output = _search(args, trials=3)
    assert code != 0
    _told_in_one_line(output, "lost the study's storage (server closed the connection")
    trials = _trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.RUNNING]
    first = trials[1]
    code, output = _search(args, trials=3)
    assert code == 0, output
    study = load_study(None, Path("out"), "net")
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert finished(study) == 3
    # Trial 1 was not run again; the one the storage lost was.
    assert trials[1].datetime_complete == first.datetime_complete
    assert trials[1].values == first.values
    assert trials[2].state == TrialState.FAIL
    assert [t.system_attrs.get("failed_trial") for t in trials[3:]] == [2, None]
    assert Path("out/best/config.yaml").is_file() and Path("out/report.html").is_file()


def test_a_checkpoint_that_finds_no_room_leaves_its_trial_complete(
    tmp_path: Path, tiny_model: nn.Module, tiny_data: TaskData, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = {"lr": 0.01, "fit": {"max_epochs": 2, "patience": 2}}
    with monkeypatch.context() as full:
        _disk_full_for(full, lambda p: p.parent.parent.name == "checkpoints")
        result = search(
            tiny_model,
            tiny_data,
            space=space,
            trials=2,
            out=tmp_path,
            console=Console(file=io.StringIO()),
        )
    assert [t.state for t in result.study.trials] == [TrialState.COMPLETE] * 3
    assert result.best is not None
    assert result.best.config["weights"].startswith("retrained from trial")
    assert result.best.config["metrics"]["reproduces_study_value"] is True
    assert not [p for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()]
