"""The live leaderboard of a running search: the table and two progress bars (the study's, with
an estimate of the time left, and the current trial's epochs), redrawn in place in a terminal or
a notebook cell and gone when the search ends; one plain line per finished trial elsewhere (logs,
pipes)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import statistics
import threading
import time
from collections.abc import Iterator

import optuna
from optuna.trial import FrozenTrial
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from autotune.results.cells import duration
from autotune.results.leaderboard import Leaderboard

_EPOCH = re.compile(r"epoch (\d+)/(\d+)(?:, )?(.*)")
"""What a trial reports after each epoch (``search.objective``): ``epoch 3/20, accuracy 0.91``."""


class LiveLeaderboard:
    """A ``search.runner.Display``: the leaderboard while trials run."""

    def __init__(self, console: Console, metric: str, planned: int, top: int = 10) -> None:
        self.console = console
        self.metric = metric
        self.planned = planned
        self.top = top
        self.started = time.time()
        self.last_end = self.started
        """When the last trial of this session ended (or the session began)."""
        self.board: Leaderboard | None = None
        self._live: Live | None = None
        self._lock = threading.Lock()  # the Live thread redraws while trials report
        self.bars = Progress(
            TextColumn("{task.description:>9}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console,
            auto_refresh=False,
        )
        self._study_bar = self.bars.add_task("trials", total=planned, detail="")
        self._trial_bars: dict[int, TaskID] = {}

    def _refresh(self, study: optuna.Study) -> Leaderboard:
        board = Leaderboard.from_study(
            study, self.metric, started=self.started, planned=self.planned, top=self.top
        )
        with self._lock:
            self.board = board
        self.bars.update(self._study_bar, completed=self.finished_count())
        return board

    def finished_count(self) -> int:
        """How many of the planned trials are done: a continued study may hold more than a
        later command asks for (none run then), which the board's own line says."""
        done = self.board.finished() if self.board is not None else 0
        return min(done, self.planned)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left: the mean time of the finished trials times the trials left, less what
        the current trial has run already; None before any trial has finished."""
        if self.board is None:
            return None
        times = [
            r.seconds
            for r in self.board.rows
            if r.state in ("COMPLETE", "PRUNED", "FAIL") and r.seconds is not None
        ]
        if not times:
            return None
        left = max(self.planned - self.finished_count(), 0)
        running = (now or time.time()) - self.last_end if left else 0.0
        return max(statistics.fmean(times) * left - running, 0.0)

    def status(self) -> str:
        """Elapsed, time left and the best trial so far, for the study's bar and plain lines."""
        parts = [f"elapsed {duration(time.time() - self.started)}"]
        eta = self.eta()
        parts.append("ETA " + ("-" if eta is None else duration(eta)))
        best = self.board.best() if self.board is not None else None
        if best is not None:
            parts.append(f"best {self.metric} {best.value:.4f} (trial {best.number})")
        return " · ".join(parts)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        with self._lock:
            board = self.board
            self.bars.update(self._study_bar, detail=self.status())
            bars = self.bars.get_renderable()
        if board is not None:
            # As many rows as the screen holds with the bars (a Live view taller than the
            # terminal is cropped at the bottom, where the bars are): title, header and borders
            # take 5 lines, the legend up to 2, a trial's row up to 2 below 120 columns.
            spare = options.size.height - 8 - len(self._trial_bars)
            rows = spare // (1 if options.max_width >= 120 else 2) - 1  # and the source's row
            fitted = dataclasses.replace(board, top=max(1, min(board.top, rows)))
            yield fitted.table(options.max_width)
            yield fitted.legend()
        yield bars

    @contextlib.contextmanager
    def session(self, study: optuna.Study) -> Iterator[None]:
        board = self._refresh(study)
        self.last_end = time.time()
        if not (self.console.is_terminal or self.console.is_jupyter):
            self.console.print(board.progress_line(), highlight=False, soft_wrap=True)
            yield
            return
        # Transient: the final leaderboard is printed once, after the search, by the caller.
        with Live(self, console=self.console, refresh_per_second=4, transient=True) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None

    def progress(self, number: int, doing: str) -> None:
        match = _EPOCH.match(doing)
        with self._lock:
            if number not in self._trial_bars:
                self._trial_bars[number] = self.bars.add_task(f"trial {number}", detail="")
            task = self._trial_bars[number]
            if match is None:
                self.bars.update(task, detail=doing)
            else:
                epoch, epochs, rest = match.groups()
                self.bars.update(task, completed=int(epoch), total=int(epochs), detail=rest)

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with self._lock:
            task = self._trial_bars.pop(trial.number, None)
            if task is not None:
                self.bars.remove_task(task)
        self.last_end = time.time()
        board = self._refresh(study)
        if self._live is not None:
            self._live.refresh()
            return
        row = next(r for r in board.rows if r.number == trial.number)
        counted = f"[{self.finished_count()}/{self.planned} · {self.status()}]"
        self.console.print(f"{board.plain_line(row)} {counted}", highlight=False, soft_wrap=True)
