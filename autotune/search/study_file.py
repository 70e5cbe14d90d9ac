"""The default study file of an earlier autotune, ``OUT/study.db``, which a search in that folder
still continues (``paths.study_file``): SQLite's write-ahead log while a search writes to it,
one plain SQLite file once the search is over.

Every parameter, epoch and attribute a trial records is one transaction. In SQLite's default
journal mode each waits for the disk twice, which took most of a small search's storage time
(``bench/fixed_cost.py``). With the log, synced at checkpoints, a commit survives the process
being killed, and a power cut loses at most the latest commits, never the file. The log needs
its users on one host, as the default file in OUT is; a study shared between machines has its
own ``--storage``, left as SQLite makes it.
"""

from __future__ import annotations

import sqlite3
import weakref
from contextlib import closing
from pathlib import Path
from typing import Any

import optuna

_OPEN: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
"""The engines this process opened on a default study file, by ``id``."""


def track(storage: optuna.storages.RDBStorage) -> None:
    """Remember the engine of a default study file, for ``settle`` to close."""
    _OPEN[id(storage.engine)] = storage.engine


def write_ahead(storage: optuna.storages.RDBStorage) -> None:
    """Put the SQLite file behind ``storage`` in write-ahead-log mode, synced at checkpoints."""
    from sqlalchemy import event

    event.listen(storage.engine, "connect", _log_ahead)
    storage.engine.dispose()  # the connections opened before the listener close


def _log_ahead(connection: Any, _: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def settle(path: Path) -> None:
    """Fold the log back into the study file at ``path`` and return it to SQLite's default
    mode: a finished study is one file again, which can be copied alone and read from a
    read-only folder. Best effort: while another process (a worker, the dashboard) has the
    file open it stays in log mode, as safe, and the next search to end settles it."""
    from sqlalchemy import event

    for engine in list(_OPEN.values()):
        if engine.url.database and Path(engine.url.database).resolve() == path.resolve():
            # The study stays open after the search (the summary, a notebook read it): a
            # connection it opens later must not put the file back in log mode.
            if event.contains(engine, "connect", _log_ahead):
                event.remove(engine, "connect", _log_ahead)
            engine.dispose()  # this process's connections would keep the log
    if not path.is_file():
        return
    try:
        with closing(sqlite3.connect(path, timeout=0.5)) as connection:
            connection.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error:
        pass
