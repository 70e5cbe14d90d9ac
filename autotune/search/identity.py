"""Which process runs a trial, recorded so that it cannot recur, and whether that process lives.

A pid alone recurs: a restarted container's process gets the pid of the one before it, and a
machine hands a dead worker's pid to an unrelated process. So a trial records its worker
(``WORKER``) as the host, the pid, a run id drawn at random when the process starts, the
machine's boot id and the process's start time. A trial is this process's only when the run
id is its own; a worker of this machine lives only when a process with its pid runs, started
when the recorded one did, on the same boot. Studies written before recorded ``host:pid``
alone: such a worker lives while its pid does, and is never this process (which records a
run id).
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any

HOST = socket.gethostname()
RUN = secrets.token_hex(8)
"""This process's run id: a spawned worker imports this module afresh and draws its own."""
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str | None:
    """This machine's boot id (Linux), None where there is none."""
    try:
        with open(BOOT_ID) as f:
            return f.read().strip() or None
    except OSError:
        return None


def start_time(pid: int) -> float | None:
    """When process ``pid`` started, in a unit fixed per machine: clock ticks since boot from
    ``/proc/PID/stat`` (field 22), else psutil's seconds since the epoch where psutil is
    installed; None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The name (field 2) may hold spaces and parentheses: count after its last ")".
            return float(f.read().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    try:
        return round(psutil.Process(pid).create_time(), 3)
    except psutil.Error:
        return None


WORKER: dict[str, Any] = {
    "host": HOST,
    "pid": os.getpid(),
    "run": RUN,
    "boot": boot_id(),
    "started": start_time(os.getpid()),
}
"""Which process runs a trial, recorded on it (several workers may share one study)."""


def is_ours(worker: object) -> bool:
    """Whether ``worker`` (a trial's record of it) is this process."""
    return (
        isinstance(worker, dict) and worker.get("run") == RUN and worker.get("pid") == os.getpid()
    )


def is_local(worker: object) -> bool:
    """Whether ``worker`` ran on this machine (as far as its record says)."""
    if isinstance(worker, dict):
        return worker.get("host") == HOST and isinstance(worker.get("pid"), int)
    if isinstance(worker, str):
        host, _, pid = worker.rpartition(":")
        return host == HOST and pid.isdigit()
    return False


def lives(worker: object) -> bool:
    """Whether the process ``worker`` of this machine (``is_local``) still runs."""
    if isinstance(worker, str):  # "host:pid", before run ids
        pid = int(worker.rpartition(":")[2])
        return pid != os.getpid() and _alive(pid)
    assert isinstance(worker, dict)
    pid = int(worker["pid"])
    if pid == os.getpid():
        return is_ours(worker)
    boot, now = worker.get("boot"), boot_id()
    if boot is not None and now is not None and boot != now:
        return False  # the machine restarted since
    if not _alive(pid):
        return False
    started, current = worker.get("started"), start_time(pid)
    return started is None or current is None or float(started) == current


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    # A zombie (a killed child not yet reaped) is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True
