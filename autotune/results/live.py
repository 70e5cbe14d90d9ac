"""The live leaderboard of a running search: updated in place in a terminal or a notebook cell,
one plain line per finished trial elsewhere (logs, pipes)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import optuna
from optuna.trial import FrozenTrial
from rich.console import Console
from rich.live import Live

from autotune.results.leaderboard import Leaderboard


class LiveLeaderboard:
    """A ``search.runner.Display``: the leaderboard while trials run."""

    def __init__(self, console: Console, metric: str, planned: int) -> None:
        self.console = console
        self.metric = metric
        self.planned = planned
        self.started = time.time()
        self.board: Leaderboard | None = None
        self._live: Live | None = None

    def _refresh(self, study: optuna.Study) -> Leaderboard:
        running = self.board.running if self.board is not None else {}
        self.board = Leaderboard.from_study(
            study, self.metric, started=self.started, planned=self.planned, running=running
        )
        return self.board

    @contextlib.contextmanager
    def session(self, study: optuna.Study) -> Iterator[None]:
        board = self._refresh(study)
        if not (self.console.is_terminal or self.console.is_jupyter):
            self.console.print(board.progress_line())
            yield
            return
        # Transient: the final leaderboard is printed once, after the search, by the caller.
        with Live(board, console=self.console, refresh_per_second=4, transient=True) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None

    def progress(self, number: int, doing: str) -> None:
        if self.board is not None:
            self.board.running[number] = doing

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.board is not None:
            self.board.running.pop(trial.number, None)
        board = self._refresh(study)
        if self._live is not None:
            self._live.update(board)
            return
        row = next(r for r in board.rows if r.number == trial.number)
        self.console.print(board.plain_line(row), highlight=False, soft_wrap=True)
