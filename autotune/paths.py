"""Where files go: the cache folder, and the layout of a search's output folder (``OUT/``).

```
OUT/study.journal       the Optuna study (a journal file, unless --storage says otherwise; a
                        study.db made by an earlier autotune stays its study)
OUT/analysis/           the rankings (JSON) and their charts (PNG)
OUT/checkpoints/STUDY/  weights of trials that may be exported, a folder per study, and the
                        in-trial checkpoints of trials still running or interrupted
OUT/best/, OUT/trial_N/ exported bundles: model.pt, model.pt2, config.yaml
OUT/leaderboard.csv     every trial
OUT/report.html, OUT/report/   the report and its PNGs
OUT/artifacts/          files attached to the study for optuna-dashboard
OUT/workers/            what each extra worker process of --workers said
```
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import yaml

from autotune.errors import AutotuneError, StorageError, causes, redacted
from autotune.interrupts import held


def cache_dir() -> Path:
    """``$AUTOTUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/autotune``, else ``~/.cache/autotune``."""
    if os.environ.get("AUTOTUNE_CACHE_DIR"):
        return Path(os.environ["AUTOTUNE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autotune"


def study_file(out: Path) -> Path:
    """The study file of ``out`` when no ``--storage`` is given: Optuna's journal file, or the
    SQLite ``study.db`` of a study made before the journal was the default, which the same
    command continues."""
    legacy = out / "study.db"
    return legacy if legacy.is_file() else out / "study.journal"


def analysis_dir(out: Path) -> Path:
    return out / "analysis"


def checkpoints_dir(out: Path, study_name: str) -> Path:
    """Where the study ``study_name`` keeps its trials' weights: several studies may share
    one output folder, and each numbers its trials from 0."""
    return shared_checkpoints_dir(out) / study_folder(study_name)


def shared_checkpoints_dir(out: Path) -> Path:
    """``OUT/checkpoints``: it held every study's weights itself before each had a folder."""
    return out / "checkpoints"


# A name that is a folder name as it is, on any disk: lower case (a case-insensitive disk
# would take Demo for demo), no leading dot, not too long.
_PLAIN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_HASHED = re.compile(r".*--[0-9a-f]{8}")


def study_folder(study_name: str) -> str:
    """A folder name for the study ``study_name``: the name itself when it is a plain one
    (the default, a model file's stem, mostly is), else a slug of it and a hash of the whole,
    so that no two names share a folder (``a/b`` and ``a_b``, ``A`` and ``a``)."""
    if _PLAIN.fullmatch(study_name) and not _HASHED.fullmatch(study_name):
        return study_name
    slug = re.sub(r"[^a-z0-9._-]+", "_", study_name.lower()).strip("._-")[:48] or "study"
    return f"{slug}--{hashlib.sha256(study_name.encode()).hexdigest()[:8]}"


def checkpoint_path(folder: Path, number: int) -> Path:
    """The weights file of trial ``number`` in a checkpoints folder."""
    return folder / f"trial_{number:04d}.pt"


def resume_path(folder: Path, number: int) -> Path:
    """The in-trial checkpoint of trial ``number`` (and of the trials that continue it)."""
    return folder / f"resume_{number:04d}.pt"


def export_dir(out: Path, number: int | None) -> Path:
    """``OUT/best`` for the best trial, ``OUT/trial_N`` for trial N."""
    return out / ("best" if number is None else f"trial_{number}")


def replaced_bundle(out: Path, study_name: str) -> str | None:
    """A note when ``OUT/best`` holds another study's export: several studies may share one
    output folder (and its study file), but ``best/``, ``leaderboard.csv`` and ``report.html``
    are the latest study's. Said before the search starts, with how to write the other's
    bundle again (its trials and weights stay in the folder); None otherwise."""
    try:
        held = yaml.safe_load((export_dir(out, None) / "config.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None  # no bundle there, or none autotune can read: nothing of a study's to lose
    other = held.get("study") if isinstance(held, dict) else None
    if not isinstance(other, str) or other == study_name:
        return None
    again = (
        f"autotune export --out {shlex.quote(str(out))} --study-name {shlex.quote(other)} "
        "--to FOLDER"
    )
    return (
        f"note: {export_dir(out, None)} holds study {other!r}'s export; study {study_name!r} "
        f"will replace it, leaderboard.csv and report.html when it ends ({other!r}'s trials "
        f"and weights stay: `{again}` writes its bundle again)"
    )


def leaderboard_csv(out: Path) -> Path:
    return out / "leaderboard.csv"


def report_html(out: Path) -> Path:
    return out / "report.html"


def report_dir(out: Path) -> Path:
    return out / "report"


def artifacts_dir(out: Path) -> Path:
    return out / "artifacts"


def check_writable(
    out: Path, flag: str = "--out", fix: str = "give a folder you can write to"
) -> Path | None:
    """Fail now, before any work, when ``out`` cannot be the output folder; the outermost
    folder this made for it (``remove_made``), None when ``out`` existed. ``flag`` names the
    folder in the message (the option that chose it), ``fix`` says what to do instead."""
    if out.exists() and not out.is_dir():
        raise AutotuneError(f"{flag} {str(out)!r} is an existing file: {fix}")
    made = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-check-"):
            pass
    except OSError as e:
        raise AutotuneError(
            f"{flag} {str(out)!r} cannot be written ({e.strerror or e}): {fix}"
        ) from e
    return made


def check_folder(folder: Path, what: str) -> None:
    """Fail now, before any work, when ``folder`` is not an existing folder this user can
    write in (``what`` says which folder, for the message); unlike ``check_writable``, it
    makes nothing."""
    if folder.exists() and not folder.is_dir():
        raise AutotuneError(f"{what} {str(folder)!r} is a file: give a folder to write to")
    if not folder.is_dir():
        raise AutotuneError(
            f"{what} {str(folder)!r} does not exist: create it first, or give the output "
            "folder of a search"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as e:
        raise AutotuneError(
            f"{what} {str(folder)!r} cannot be written ({e.strerror or e}): give a folder you "
            "can write to"
        ) from e


def remove_made(out: Path, made: Path | None) -> None:
    """Remove the folders ``check_writable`` made for ``out`` while they are still empty: a
    search refused before it started leaves nothing behind."""
    if made is None:
        return
    for folder in [out, *out.parents]:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or gone): what is in it stays
        if folder == made:
            return


# A scheme of two letters or more (one is a Windows drive), whatever follows it.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
# libpq's key=value connection strings, and ODBC's Key=value;...
_DSN_KEY = re.compile(
    r"(?:^|[\s;])(?:host|hostaddr|port|dbname|user|password|passfile|sslmode|service|server|"
    r"database|uid|pwd)\s*=",
    re.IGNORECASE,
)


_IN_MEMORY = re.compile(r"sqlite:///?(?::memory:)?", re.IGNORECASE)
"""SQLAlchemy's URLs of a SQLite database in memory: sqlite://, sqlite:///:memory:."""


def check_storage(storage: str | None) -> None:
    """Fail now, before anything is written, when ``storage`` is neither a URL (``://``) nor
    a journal file path: a mistyped URL taken for a path would put its password in a folder
    name, the header and the recorded command line."""
    if storage is not None and _IN_MEMORY.fullmatch(storage.split("?")[0]):
        # The study would end with the process: no report, no rerun, no export, no 2nd worker.
        raise StorageError(
            f"--storage {storage!r} is a database in memory, gone when the search ends: give "
            "a file (sqlite:///study.db, a journal file path), or leave --storage out"
        )
    if storage is None or "://" in storage:
        return  # a URL: the database driver says what is wrong with it, if anything
    if _SCHEME.match(storage) or _DSN_KEY.search(storage) or redacted(storage) != storage:
        raise StorageError(
            f"--storage {redacted(storage)!r} is neither a storage URL nor a journal file path: "
            "write sqlite:///path, postgresql://user@host/db, mysql://user@host/db, or the path "
            "of a journal file"
        )


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""The errors of a disk (or a quota) with no room left."""


def out_of_space(e: BaseException) -> bool:
    """Whether ``e``, or an error it arose from, is a write that found no room left."""
    return any(isinstance(c, OSError) and c.errno in DISK_FULL for c in causes(e))


def write_atomically(
    path: Path, write: Callable[[BinaryIO], object], keep_old: bool = True
) -> None:
    """Write ``path`` whole or not at all: ``write`` fills a new file beside it, which reaches
    the disk before it is renamed to ``path``. A failure (a full disk, a crash) leaves no part
    of a file: ``path`` stays as it was, or with ``keep_old=False`` is removed (where an older
    file would no longer match the files written beside it).

    ``write`` gets a binary file rather than a path: torch then reports a full disk as the
    ``OSError`` it is (saving to a path, it raises a ``RuntimeError`` that names no cause)."""
    # A name of its own: two processes (workers building the demo) may write one path at once.
    part = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    # A signal waits for the file: stopped half-way, a checkpoint is lost, and torch.save,
    # whose C++ writes through ``f.write``, may turn the stop into "unexpected pos" (a failed
    # trial, and the search goes on).
    with held():
        try:
            with open(part, "xb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(part, path)
        except BaseException:
            # A cleanup that fails too (the folder is gone, or is a file) must not hide why
            # the write failed: that error is the one raised.
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)
            if not keep_old:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
            raise
        _sync_folder(path.parent)


def write_text_atomically(path: Path, text: str, keep_old: bool = True) -> None:
    """``write_atomically`` for text, in UTF-8."""
    write_atomically(path, lambda f: f.write(text.encode("utf-8")), keep_old)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` survive a power cut (where the system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems and systems cannot sync a folder: the rename still happened
    finally:
        os.close(fd)


def workers_dir(out: Path) -> Path:
    return out / "workers"
