"""The extra worker processes of ``--workers N`` on one machine.

The first process prepares the study (analysis, baseline, seed trials) and starts N - 1 more,
each a fresh interpreter (``spawn``: no forked torch state) that reads the job back from the
study's record and runs trials until the study has its total. The first process runs trials
too, waits for the others, and is the only one that exports. A worker stops as after a Ctrl-C
on its first SIGINT, and when its parent dies (``interrupts``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from autotune.interrupts import stop_once, stop_with_parent

STOP_SECONDS = 30.0
"""How long an interrupted worker has to end its trial before it is killed."""


class Pool:
    """Processes running ``target(*args)`` for each ``args``; interrupted with the parent."""

    def __init__(self, target: Callable[..., None], jobs: list[tuple[Any, ...]]) -> None:
        context = multiprocessing.get_context("spawn")
        self.processes: list[BaseProcess] = [
            context.Process(target=_main, args=(target, *args), name=f"autotune-worker-{i + 1}")
            for i, args in enumerate(jobs)
        ]

    def __enter__(self) -> Pool:
        for process in self.processes:
            process.start()
        return self

    def join(self) -> list[int]:
        """Wait for every worker; their exit codes."""
        for process in self.processes:
            process.join()
        return [p.exitcode if p.exitcode is not None else -1 for p in self.processes]

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.join()
            return
        # The parent stopped (Ctrl-C, an error): the workers stop as after a Ctrl-C of their own.
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGINT)
        for process in self.processes:
            process.join(STOP_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()


def _main(target: Callable[..., None], *args: Any) -> None:
    """A worker process: ``target(*args)``, stopped by a first SIGINT or its parent's death."""
    stop_once()
    stop_with_parent()
    target(*args)
