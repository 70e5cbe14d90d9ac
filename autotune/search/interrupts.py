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
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn


class _State:
    held = 0
    """How many ``held`` blocks are open (an ``allowed`` block opens a window in them)."""
    pending = False
    """A SIGINT arrived while held."""
    once = False
    """Ignore every SIGINT after the first that stopped this process (worker processes)."""
    raised = False
    """A SIGINT was raised as ``KeyboardInterrupt``."""


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if _State.once and _State.raised:
        return
    if _State.held:
        _State.pending = True
        return
    _interrupt()


def _interrupt() -> NoReturn:
    _State.raised = True
    raise KeyboardInterrupt


@contextmanager
def held() -> Iterator[None]:
    """Hold a SIGINT until the block ends (Optuna starting and ending a trial); then the
    handler there before it hears of it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # a SIGINT never runs code in this thread
        return
    previous: Any = signal.signal(signal.SIGINT, _on_sigint)
    _State.held += 1
    ended = False
    try:
        yield
        ended = True
    finally:
        _State.held -= 1
        if previous is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGINT, previous)
        if _State.pending and not _State.held:
            _State.pending = False
            if ended:  # else an exception, maybe this Ctrl-C's own, is already on its way
                _deliver(previous)


def _deliver(handler: Any) -> None:
    """Hand a held SIGINT to ``handler``, the one in place before ``held``."""
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
            _State.pending = False
            _interrupt()
        yield
    finally:
        _State.held = outer


def stop_once() -> None:
    """In a worker process: the first SIGINT stops it, later ones are ignored."""
    _State.once = True
    signal.signal(signal.SIGINT, _on_sigint)


def stop_with_parent() -> None:
    """In a process ``multiprocessing`` started: a SIGINT to itself when its parent is gone
    (the end of a pipe only the parent holds: no polling, and a kill -9 closes it too)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="autotune-parent", daemon=True).start()
