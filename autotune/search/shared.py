"""The rankings, shared through the study's storage: a study run by several machines (one
PostgreSQL database) computes each analysis once; the other machines read it from the study
into their local cache instead of computing it again.

The analysis JSON goes into the study's system attributes (kept out of the dashboard's user
attributes), under the same key as the cache file, so a changed model, data or option is a
different entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import optuna

from autotune.config import AnalysisOptions
from autotune.load.job import Job
from autotune.paths import write_text_atomically
from autotune.rank.analyze import cache_path
from autotune.search.optuna_internals import set_study_system_attr, study_system_attrs
from autotune.search.space import SearchSpace

PREFIX = "autotune:analysis:"
POLL_SECONDS = 2.0


def shared(
    study: optuna.Study, job: Job, space: SearchSpace, compute: Callable[[], None], wait_s: float
) -> None:
    """``compute()`` the analyses (from the cache when there), having first copied into the
    cache those the study holds (waiting up to ``wait_s`` for them); then store them in it."""
    fetch(study, job, space, wait_s)
    compute()
    publish(study, job, space)


def _entries(job: Job, space: SearchSpace) -> dict[str, Path]:
    options = AnalysisOptions(**space.analysis)
    paths = [cache_path(job, method, options) for method in space.methods()]
    return {f"{PREFIX}{path.stem}": path for path in paths}


def fetch(study: optuna.Study, job: Job, space: SearchSpace, wait_s: float = 0.0) -> int:
    """Copy the analyses the study holds for ``job`` into the local cache; with ``wait_s``,
    wait that long for the machine computing them. Returns how many were copied."""
    entries = _entries(job, space)
    deadline = time.monotonic() + wait_s
    while True:
        held = study_system_attrs(study)
        if all(key in held for key in entries) or time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    copied = 0
    for key, path in entries.items():
        if key in held and not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(path, held[key])
            copied += 1
    return copied


def publish(study: optuna.Study, job: Job, space: SearchSpace) -> None:
    """Store each cached analysis of ``job`` in the study, once."""
    held = study_system_attrs(study)
    for key, path in _entries(job, space).items():
        if key not in held and path.is_file():
            set_study_system_attr(study, key, path.read_text())
