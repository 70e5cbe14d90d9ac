"""A full disk or a lost study storage: failures that no input or setting caused. They end a
search (or an export, a report) in one line saying what happened and that the finished trials
are kept; the same command, run again once there is room or the storage is back, goes on from
them (a trial its worker left running is failed and run again, ``search.trials``)."""

from __future__ import annotations

import re

from autotune.errors import AutotuneError, causes, first_line, redacted
from autotune.paths import DISK_FULL

# SQLite's words for a full disk: it reports no errno.
_SQLITE_FULL = "database or disk is full"
# The driver's exception type that SQLAlchemy puts before its message: "(psycopg2.Oper...) ".
_DRIVER = re.compile(r"^\([\w.]+\)\s*")


class Outage(AutotuneError):
    """The disk filled up or the study's storage went away: run the same command again once
    it is back."""


def _full(e: BaseException) -> bool:
    return (isinstance(e, OSError) and e.errno in DISK_FULL) or _SQLITE_FULL in str(e)


def _lost_storage(e: BaseException) -> bool:
    import optuna
    from sqlalchemy import exc

    lost = (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError)
    return isinstance(e, (*lost, optuna.exceptions.StorageInternalError))


def outage(e: BaseException) -> Outage | None:
    """The one-line error to report when ``e`` (or an error it arose from) is a full disk or a
    lost storage, else None. An ``Outage`` is its own."""
    if isinstance(e, Outage):
        return e
    chain = list(causes(e))
    full = next((c for c in chain if _full(c)), None)
    if full is not None:
        name = getattr(full, "filename", None)
        where = f" (writing {name})" if name else ""
        return Outage(
            f"the disk is full{where}: the study's finished trials are kept; make room and run "
            "the same command again to go on from them"
        )
    # The deepest storage error is the driver's, which says what happened; Optuna's wrapper
    # blames "invalid data in the commit".
    lost = [c for c in chain if _lost_storage(c)]
    if lost:
        reason = _DRIVER.sub("", redacted(first_line(lost[-1])))
        return Outage(
            f"lost the study's storage ({reason}): its finished trials are kept there; run the "
            "same command again once it is reachable to go on from them"
        )
    return None


def raise_outage(e: BaseException) -> None:
    """Raise the one-line ``Outage`` when ``e`` comes of a full disk or a lost storage."""
    lost = outage(e)
    if lost is e:
        raise e
    if lost is not None:
        raise lost from e
