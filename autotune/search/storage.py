"""The storage a study lives in: the default journal file in the output folder, any RDB URL, or
a journal file given; opened with one-line errors that say what to do (a damaged file, an
unreachable server).

Why a journal file by default: a trial's storage calls cost a small search more than its
training did with SQLite (each call a round trip through SQLAlchemy, and every read of a running
trial a query per table); Optuna's journal appends a line per call and reads only the lines
written since. ``bench/storage_cost.py`` measures both. The default file is used from one
machine, where a dead worker's trials are found by its pid (``search.trials``), so SQLite's
heartbeat adds nothing there; a study shared between machines names its database server."""

from __future__ import annotations

import sqlite3
import time
import warnings
from contextlib import closing
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from autotune.errors import StorageError, first_line, redacted
from autotune.paths import check_storage, study_file
from autotune.search.journal import open_journal
from autotune.search.study_file import track
from autotune.search.trials import retry


def open_storage(url: str | None, out: Path) -> BaseStorage | str:
    """An Optuna storage: the journal file in ``out`` by default (``paths.study_file``), any
    RDB URL, or a journal file."""
    check_storage(url)
    local = url is None
    if url is None:
        out.mkdir(parents=True, exist_ok=True)
        default = study_file(out)
        url = f"sqlite:///{default}" if default.suffix == ".db" else str(default)
    try:
        if "://" not in url:
            return open_journal(Path(url))
        from sqlalchemy.exc import IntegrityError, ProgrammingError

        # Heartbeats let a restarted worker fail and retry the trials of one that died.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for attempt in range(3):
                try:
                    storage = optuna.storages.RDBStorage(
                        url,
                        engine_kwargs=_engine_kwargs(url),
                        heartbeat_interval=60,
                        grace_period=180,
                        heartbeat_stale_trial_callback=retry,
                    )
                    if local:
                        track(storage)
                    return storage
                except (IntegrityError, ProgrammingError):
                    # Workers starting together on a new database race to create its tables:
                    # the loser finds them made on its next try.
                    if attempt == 2:
                        raise
                    time.sleep(1.0 + attempt)
            raise AssertionError("unreachable")
    except StorageError:
        raise
    except Exception as e:
        reason = redacted(first_line(e))
        file = local_file(url, out)
        if file is not None and file.is_file() and _damaged(e, reason, "://" not in url):
            raise damaged_file(file, reason) from e
        if file is not None and isinstance(e, OSError):
            raise StorageError(
                f"cannot open the study file {str(file)!r} ({reason}): make it a file this user "
                "can read and write, or move it aside (a new study starts in its place)"
            ) from e
        raise cannot_open(url, e) from e


def cannot_open(url: str, e: Exception) -> StorageError:
    """The one line for a storage URL that does not open (a server down, a driver missing)."""
    return StorageError(
        f"cannot open storage {redacted(url)!r}: {redacted(first_line(e))}. Check the URL "
        "(sqlite:///path, postgresql://user@host/db, or a journal file path), that the server "
        "is running, and that its driver is installed"
    )


def _damaged(e: Exception, reason: str, journal: bool) -> bool:
    """Whether the error says the file is not a sound study (not a missing driver or a
    permission): SQLite's words for a broken database; of a journal, anything but the system's
    refusal to read it (a line that is not JSON, or not one of Optuna's operations)."""
    if journal:
        return not isinstance(e, OSError)
    return any(s in reason for s in ("malformed", "not a database", "file is encrypted"))


def local_file(url: str | None, out: Path) -> Path | None:
    """The file a storage lives in (the default study file, a SQLite URL's, a journal file);
    None for a database server."""
    if url is None:
        return study_file(out)
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///").partition("?")[0])  # ?timeout=... is no path
    return None if "://" in url else Path(url)


def sqlite_file(url: str | None, out: Path) -> Path | None:
    """The SQLite database file a storage lives in (a ``sqlite:///`` URL's, or an older
    search's default ``OUT/study.db``); None for a journal file or a database server."""
    if url is None:
        default = study_file(out)
        return default if default.suffix == ".db" else None
    return local_file(url, out) if url.startswith("sqlite:///") else None


OPTUNA_TABLES = {"studies", "version_info"}


def holds_optuna_tables(file: Path) -> bool:
    """Whether the SQLite file ``file`` has Optuna's tables, read without writing to it: opened
    as Optuna's storage, any database gets them (a read-only command would change the user's
    file). True where SQLite cannot read it: opening it as the storage then says why."""
    if file.is_file() and file.stat().st_size == 0:
        return False
    # Read only, and as immutable unless a write-ahead log is there to be read: to read a
    # database in log mode SQLite would otherwise make the log and its index beside it.
    mode = "mode=ro" if Path(f"{file}-wal").exists() else "immutable=1"
    try:
        with closing(sqlite3.connect(f"{file.resolve().as_uri()}?{mode}", uri=True)) as db:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except (sqlite3.Error, ValueError):
        return True
    return {name for (name,) in rows} >= OPTUNA_TABLES


def server_holds_optuna_tables(url: str) -> bool:
    """Whether the database server's database at ``url`` has Optuna's tables, asked without
    creating them (as ``holds_optuna_tables`` for a file). A server that cannot be asked (down,
    no driver) is reported here, in the words opening it as the storage would use: asking
    again would wait out its connection timeout twice."""
    from sqlalchemy import create_engine, inspect

    try:
        engine = create_engine(url, **_engine_kwargs(url))
        try:
            return set(inspect(engine).get_table_names()) >= OPTUNA_TABLES
        finally:
            engine.dispose()
    except Exception as e:
        raise cannot_open(url, e) from e


def _engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy's options for ``url``: an unreachable server fails in seconds, not minutes."""
    if url.startswith(("postgresql", "mysql")):
        return {"connect_args": {"connect_timeout": 10}}
    return {}


def damaged_file(file: Path, reason: str) -> StorageError:
    """The one line for a study file that is not a sound database, with what to do."""
    return StorageError(
        f"the study file {str(file)!r} is damaged ({reason}): restore it from a copy, or move it "
        "aside (to start a new study in its place; the checkpoints and the analysis cache beside "
        "it stay usable)"
    )


def probe_storage(url: str | None, out: Path) -> None:
    """Open the storage once and close it: an unreachable server or a damaged study file is
    reported before the model loads. A study file not made yet is left to the search."""
    file = local_file(url, out)
    if file is not None and not file.exists():
        # SQLite makes the file but not its folder: without this its error would read as a
        # lost storage, after the model loaded.
        if url is not None and url.startswith("sqlite:") and not file.parent.is_dir():
            raise StorageError(
                f"--storage {redacted(url)!r}: there is no folder {str(file.parent)!r} for its "
                "database file: create the folder, or fix the path"
            )
        return
    storage = open_storage(url, out)
    if isinstance(storage, optuna.storages.RDBStorage):
        try:
            storage.get_all_studies()  # SQLite opens a damaged file lazily: read it
        except Exception as e:
            reason = redacted(first_line(e))
            if file is not None:
                raise damaged_file(file, reason) from e
            raise StorageError(f"cannot read storage {redacted(str(url))!r}: {reason}") from e
        finally:
            storage.engine.dispose()
