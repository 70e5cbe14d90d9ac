"""Where a Ctrl-C (SIGINT) may stop a search, and what stops a worker process of ``--workers``.

Optuna records a trial's start and end in storage calls outside the objective; a
``KeyboardInterrupt`` raised among them leaves the trial RUNNING (at its end, Optuna's own code
then fails with "cannot access local variable 'updated_state'"). So while Optuna starts or ends a
trial (``held``), a SIGINT waits and is raised once that is recorded; inside the objective
(``allowed``) and everywhere else it is raised at once, as usual.

A worker process stops as after a Ctrl-C of its own (its trial recorded as interrupted, no
further trial) on the first SIGINT, and ignores the ones after it (``stop_once``): a Ctrl-C
in a terminal reaches the whole process group, and the parent, interrupted too, sends another.
It also stops when its parent dies (``stop_with_parent``): after a kill -9 of the parent, no one
else would tell it, and it would run to the end with no one left to export.

Storage calls and file writes hold a signal until they end too (``hold_in_calls``, and
``paths.write_atomically``): stopped half-way, SQLite keeps a half-read statement that locks
out the next write, and a file is lost (torch.save, whose C++ writes through Python, may even
report "unexpected pos" instead of the stop, failing the trial).

A SIGTERM or SIGHUP (a batch scheduler, ``docker stop``, a cloud preemption, a closed terminal)
stops a search as a Ctrl-C does (``stop_on_termination``): raised as ``Terminated``, a
``KeyboardInterrupt``, so that every path a Ctrl-C takes it takes too, and the command exits
128 + the signal's number. The end of a finished search (``deferred``) completes before a first
signal stops it, and a second stops it at once.
"""

from __future__ import annotations

import functools
import inspect
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn, ParamSpec, TypeVar

TERMINATIONS = (signal.SIGTERM, signal.SIGHUP)
P = ParamSpec("P")
R = TypeVar("R")


class Terminated(KeyboardInterrupt):
    """A SIGTERM or SIGHUP: a search stops as after a Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(stop: KeyboardInterrupt) -> int:
    """The shell's code for a process a signal stopped: 130 a Ctrl-C, 143 SIGTERM, 129 SIGHUP."""
    return 128 + (stop.signum if isinstance(stop, Terminated) else signal.SIGINT)


class _State:
    held = 0
    """How many ``held`` blocks are open (an ``allowed`` block opens a window in them)."""
    pending = 0
    """The signal that arrived while held or deferred (0: none)."""
    deferred = False
    """Inside ``deferred``: a first signal waits for its end."""
    once = False
    """Ignore every signal after the first that stopped this process (worker processes)."""
    raised = False
    """A signal was raised as ``KeyboardInterrupt``."""


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGINT, and of SIGTERM and SIGHUP once ``stop_on_termination`` ran."""
    if _State.once and _State.raised:
        return
    if _State.deferred and not _State.pending:
        _State.pending = signum
        return
    if _State.held and not _State.deferred:
        _State.pending = _State.pending or signum
        return
    _interrupt(signum)


def _interrupt(signum: int = signal.SIGINT) -> NoReturn:
    _State.raised = True
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)


def stop_on_termination() -> None:
    """Let SIGTERM and SIGHUP stop this process as a Ctrl-C does (from the main thread), except
    where they are ignored (``nohup``)."""
    for signum in TERMINATIONS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _on_sigint)


@contextmanager
def deferred() -> Iterator[None]:
    """Let the block finish (the end of a search: leaderboard, export, report) before a first
    signal stops the process, once the block ends; a second stops it at once."""
    if threading.current_thread() is not threading.main_thread() or _State.deferred:
        yield
        return
    previous: Any = signal.signal(signal.SIGINT, _on_sigint)
    _State.deferred = True
    try:
        yield
    except BaseException:
        _State.pending = 0  # the block stops anyway, maybe on a second signal: none is left
        raise
    finally:
        _State.deferred = False
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if _State.pending:
        signum, _State.pending = _State.pending, 0
        _interrupt(signum)


@contextmanager
def held() -> Iterator[None]:
    """Hold a SIGINT until the block ends (Optuna starting and ending a trial, a storage call,
    a file being written); then the handler there before it hears of it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # a SIGINT never runs code in this thread
        return
    previous: Any = signal.signal(signal.SIGINT, _on_sigint)
    _State.held += 1
    try:
        yield
    except KeyboardInterrupt:
        _State.pending = 0  # a stop is on its way already
        raise
    finally:
        _State.held -= 1
        if previous is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGINT, previous)
        # Also after another error, which the stop then carries as its context: kept pending,
        # the signal could outlive the search and stop a later one in the process (a notebook).
        if _State.pending and not _State.held and not _State.deferred:
            signum, _State.pending = _State.pending, 0
            _deliver(previous, signum)


def holding(call: Callable[P, R]) -> Callable[P, R]:
    """``call``, with a signal held until it returns."""

    @functools.wraps(call)
    def held_call(*args: P.args, **kwargs: P.kwargs) -> R:
        with held():
            return call(*args, **kwargs)

    return held_call


def hold_in_calls(obj: object) -> None:
    """Hold a signal until each call of a public method of ``obj`` (a study's storage) returns.

    Stopped inside one, a storage is left half-way: SQLite keeps the half-read statement of an
    interrupted query open, and the next write on its connection, once another has written,
    fails with "database is locked" (the end of a search then exported nothing); a journal file
    gets half a line."""
    for name, _ in inspect.getmembers(type(obj), callable):  # a property is read on use only
        if not name.startswith("_"):
            setattr(obj, name, holding(getattr(obj, name)))


def _deliver(handler: Any, signum: int) -> None:
    """Hand a held signal on: a SIGINT to ``handler``, the one in place before ``held``."""
    if signum != signal.SIGINT:
        _interrupt(signum)
    if handler is signal.SIG_IGN:
        return
    if callable(handler) and handler is not _on_sigint:
        handler(signal.SIGINT, None)
        return
    _interrupt()


@contextmanager
def allowed() -> Iterator[None]:
    """Let a SIGINT stop the block at once, also inside a ``held`` one (the objective: a
    trial stopped there is recorded as interrupted)."""
    outer, _State.held = _State.held, 0
    try:
        if _State.pending:
            signum, _State.pending = _State.pending, 0
            _interrupt(signum)
        yield
    finally:
        _State.held = outer


def stop_once() -> None:
    """In a worker process: the first SIGINT, SIGTERM or SIGHUP stops it, later ones are
    ignored (a scheduler signals every process of the job, and the parent passes it on)."""
    _State.once = True
    signal.signal(signal.SIGINT, _on_sigint)
    stop_on_termination()


def stop_with_parent() -> None:
    """In a process ``multiprocessing`` started: a SIGINT to itself when its parent is gone
    (the end of a pipe only the parent holds, which a kill -9 closes too, or a new parent
    pid)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    ppid = os.getppid()

    def watch() -> None:
        # The pipe stays open while a process the parent forked still holds its end; the
        # parent's pid, which a dead parent's orphan loses, is checked once a second too.
        while os.getppid() == ppid:
            parent.join(1.0)
            if not parent.is_alive():
                break
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="autotune-parent", daemon=True).start()
