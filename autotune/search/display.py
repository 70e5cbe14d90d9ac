"""What a search shows while it runs: the live leaderboard (``results.live``), or nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol

import optuna
from optuna.trial import FrozenTrial


class Display(Protocol):
    """What a search shows while it runs: the live leaderboard, or nothing."""

    def session(self, study: optuna.Study) -> AbstractContextManager[None]:
        """Shows the display for the duration of the trials."""

    def progress(self, number: int, doing: str) -> None:
        """Trial ``number`` is doing ``doing`` (after each epoch)."""

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Trial ``trial`` ended (completed, pruned or failed)."""


class NoDisplay:
    """Shows nothing (tests, exports)."""

    @contextlib.contextmanager
    def session(self, study: optuna.Study) -> Iterator[None]:
        yield

    def progress(self, number: int, doing: str) -> None:
        pass

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        pass
