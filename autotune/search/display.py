"""What a search shows while it runs: its header line, then the live leaderboard
(``results.live``) or nothing."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol, TextIO

import optuna
import torch
from optuna.trial import FrozenTrial
from rich.console import Console

from autotune.config import SearchSettings
from autotune.errors import redacted
from autotune.load.job import Job
from autotune.load.streams import Streamed
from autotune.paths import study_file


def output_console(file: TextIO | None = None) -> Console:
    """Where a search prints when given no console (the CLI, ``autotune.search``, a worker's
    ``file``): a terminal or a notebook at its own width; a log or a pipe with tables 160
    columns wide rather than squeezed into 80, and each line of text whole (soft wrap), so that
    a sentence is not broken where grep or a reader would look."""
    # A notebook is no tty either; a worker's file is a log.
    piped = file is not None or (not sys.stdout.isatty() and not Console().is_jupyter)
    return Console(file=file, width=160 if piped else None, soft_wrap=piped)


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


def header(job: Job, s: SearchSettings, n_layers: int, device: torch.device) -> str:
    """The line a search starts with: model, data (and how it is held), device, study, budgets."""
    sizes = [len(job.data.x_train), len(job.data.x_val)]
    if job.data.x_test is not None:
        sizes.append(len(job.data.x_test))
    budgets = [f"--max-{k} {getattr(s, f'max_{k}')}" for k in ("params", "macs", "flips")]
    budgets = [b for b in budgets if not b.endswith(" None")]
    storage = redacted(s.storage or str(study_file(s.out)))
    x = job.data.x_train
    held = (
        f"streamed from disk by {x.workers} loader workers"
        if isinstance(x, Streamed)
        else "resident in memory"
    )
    return (
        f"model {job.model.path} ({job.model.format}, {job.num_classes} classes, "
        f"{n_layers} layers), data {job.data.spec} "
        f"({'/'.join(map(str, sizes))} train/val{'/test' if len(sizes) == 3 else ''}, {held}), "
        f"device {device}, study {s.study_name!r} in {storage}"
        + (f", budgets {' '.join(budgets)}" if budgets else "")
        + (f", Pareto front of {s.metric} vs {s.pareto}" if s.pareto else "")
    )


@contextlib.contextmanager
def optuna_quiet(quiet: bool) -> Iterator[None]:
    # Failed trials are shown in the leaderboard with their reason; Optuna's warnings and
    # tracebacks would tear the live display apart.
    if not quiet:
        yield
        return
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)
