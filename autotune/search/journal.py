"""The journal file a study lives in by default (``OUT/study.journal``): Optuna's
``JournalStorage`` on a file, opened so that a process killed while it wrote leaves nothing
that stops the next one.

- The lock is Optuna's ``JournalFileOpenLock`` (an ``O_EXCL`` file), not its default symlink
  lock: on a relative path that one links to a name that does not resolve, and Optuna then
  retries its ``stat`` without sleeping, forever, with every signal held until the storage call
  returns. Both locks are ``FILE.lock``, so each excludes the other (``optuna-dashboard`` on
  the same file takes the symlink one).
- A lock left by a killed process is taken over after ``LOCK_GRACE_S`` of no change (Optuna's
  default is 30 s; an append holds it for milliseconds).
- A write cut short (kill -9 or a power cut during an append) leaves a last line without its
  newline. Optuna's readers skip it, but its next append would be glued onto it, and the whole
  file would then read as damaged: the cut line, which no reader ever saw, is removed first.
- A last line with its newline that is not one of Optuna's records is no write cut short but a
  damaged file, or no journal at all: Optuna's readers skip it as they would a write in
  progress, and the next append makes it a line in the middle, which they refuse. It is named
  on opening, before anything is written after it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from autotune.errors import StorageError

LOCK_GRACE_S = 10
"""Seconds a journal's lock file may stay unchanged before a waiting process takes it over."""


def open_journal(path: Path) -> JournalStorage:
    """The study storage in the journal file at ``path`` (made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    file = str(path.resolve())
    lock = Path(file + ".lock")
    if lock.is_symlink() and not lock.exists():
        raise StorageError(
            f"the study file's lock {str(lock)!r} is a link to nothing, left by a process that "
            "died while it wrote: if no search is running on this study, delete it and run the "
            "same command again"
        )
    locking = JournalFileOpenLock(file, grace_period=LOCK_GRACE_S)
    _cut_torn_line(path, locking)
    _check_last_line(path)
    return JournalStorage(JournalFileBackend(file, lock_obj=locking))


def _cut_torn_line(path: Path, locking: JournalFileOpenLock) -> None:
    """Remove a last line that has no newline, under the journal's lock (no append is then
    half-way); a file that cannot be locked (a read-only folder) is only read, and its readers
    skip that line anyway."""
    if not _torn(path):
        return
    try:
        locking.acquire()
    except (OSError, RuntimeError):  # Optuna's lock turns a refused lock file into the latter
        return
    try:
        with path.open("r+b") as f:
            data = f.read()
            whole = data.rfind(b"\n") + 1
            # Only a journal's own lines are cut: a file that holds none (the data or model
            # file given as --storage by mistake) is left whole, and its opening says so.
            if data.startswith(b'{"op_code"') and whole < len(data):
                f.truncate(whole)
                os.fsync(f.fileno())
    except OSError:
        pass  # a read-only file: read as it is
    finally:
        locking.release()


def _torn(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False  # not a readable file: opening it says why


def _check_last_line(path: Path) -> None:
    """Raise (a ``ValueError``: opening the storage calls it a damaged file) where the last
    whole line is not a record of Optuna's journal."""
    last = _last_line(path)
    if last is None:
        return
    try:
        record = json.loads(last)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise ValueError("its last line is not a record of Optuna's journal")


def _last_line(path: Path, chunk: int = 1 << 16) -> bytes | None:
    """The last line that ends in a newline, read from the end of the file (a journal grows
    to megabytes); None where there is none."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            while True:
                f.seek(max(0, size - chunk))
                data = f.read()
                end = data.rfind(b"\n")
                start = data.rfind(b"\n", 0, max(end, 0))
                if start >= 0 or chunk >= size:
                    return data[start + 1 : end + 1] if end >= 0 else None
                chunk *= 4
    except OSError:
        return None  # not a readable file: opening it says why
