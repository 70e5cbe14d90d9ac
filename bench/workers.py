"""Workers, memory and crashes on the demo: trials per hour with 1 and 2 worker processes (run
one after the other, same settings), the search processes' peak memory after a short and a long
study, and the wall time a kill -9 mid-trial and a resume cost against an uninterrupted run.

Every run is a real ``autotune search`` process on the demo from a warm cache (the demo and
its analysis are built first), with ``--epochs`` to keep trials short.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from _shared import emit
from optuna.trial import TrialState

from autotune.search.study import load_study

optuna.logging.set_verbosity(optuna.logging.ERROR)


DEVICE: list[str] = []
"""``--device X`` for every search, when the benchmark is given one."""


def search(out: Path, trials: int, epochs: int, workers: int = 1) -> list[str]:
    return [
        sys.executable, "-m", "autotune.cli", "search", "--model", "demo", "--data", "demo",
        "--space", "vision", "--trials", str(trials), "--epochs", str(epochs),
        "--workers", str(workers), "--out", str(out), *DEVICE,
    ]  # fmt: skip


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children, in MB (0 when it is gone)."""
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def run(command: list[str], kill_after: int | None = None) -> tuple[float, float]:
    """Wall seconds and peak memory (MB) of ``command``; with ``kill_after``, kill -9 it once
    that many trials have finished and one is running."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    out = Path(command[command.index("--out") + 1])
    while process.poll() is None:
        peak = max(peak, rss_mb(process.pid))
        if kill_after is not None and _running_after(out, kill_after):
            process.send_signal(signal.SIGKILL)
            process.wait()
            break
        time.sleep(0.2)
    if process.returncode not in (0, -signal.SIGKILL):
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    return time.perf_counter() - start, peak


def _running_after(out: Path, finished: int) -> bool:
    try:
        study = load_study(None, out, "demo")
    except Exception:
        return False
    trials = study.get_trials(deepcopy=False)
    done = sum(1 for t in trials if t.state.is_finished() and not t.user_attrs.get("baseline"))
    return done >= finished and any(t.state == TrialState.RUNNING for t in trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=10, help="trials per throughput run")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--memory", type=int, nargs=2, default=[5, 50], help="short, long")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2], help="worker counts")
    parser.add_argument("--device", help="--device of every search (default: autotune's)")
    parser.add_argument("--write", type=Path, help="append the Markdown to this file")
    args = parser.parse_args()
    if args.device:
        DEVICE.extend(["--device", args.device])
    root = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    os.environ.setdefault("AUTOTUNE_CACHE_DIR", str(root / "cache"))
    run(search(root / "warm", 1, 1))  # builds the demo and its analysis into the cache

    lines = [
        f"Command: `python bench/workers.py --trials {args.trials} --epochs {args.epochs} "
        f"--memory {args.memory[0]} {args.memory[1]} --counts {' '.join(map(str, args.counts))}"
        + (f" --device {args.device}" if args.device else "")
        + "`  ",
        f"Machine: {os.cpu_count()} CPU cores (shared), device {args.device or 'auto'}, "
        "1 torch thread per worker.",
        "",
        "| measure | "
        + " | ".join(f"{n} worker{'s' if n > 1 else ''}" for n in args.counts)
        + " |",
        "| --- |" + " --- |" * len(args.counts),
    ]
    seconds = {}
    for workers in args.counts:
        seconds[workers], _ = run(search(root / f"w{workers}", args.trials, args.epochs, workers))
    per_hour = {w: args.trials * 3600 / s for w, s in seconds.items()}
    one = per_hour[args.counts[0]]
    lines.append(
        f"| {args.trials} trials, wall seconds (process start to exit) | "
        + " | ".join(f"{seconds[n]:.0f}" for n in args.counts)
        + " |"
    )
    lines.append(
        "| trials per hour | " + " | ".join(f"{per_hour[n]:.0f}" for n in args.counts) + " |"
    )
    lines.append(
        f"| ratio to {args.counts[0]} worker(s) | "
        + " | ".join(f"{per_hour[n] / one:.2f}x" for n in args.counts)
        + " |"
    )
    lines += ["", "| study length | peak memory of the search process |", "| --- | --- |"]
    for n in args.memory:
        _, peak = run(search(root / f"m{n}", n, args.epochs))
        lines.append(f"| {n} trials | {peak:.0f} MB |")
    whole, _ = run(search(root / "whole", args.trials, args.epochs))
    killed, _ = run(search(root / "killed", args.trials, args.epochs), kill_after=args.trials // 2)
    resumed, _ = run(search(root / "killed", args.trials, args.epochs))
    lost = killed + resumed - whole
    lines += [
        "",
        f"kill -9 after {args.trials // 2} of {args.trials} trials, mid-trial, then the same "
        f"command: {killed:.0f} s + {resumed:.0f} s against {whole:.0f} s uninterrupted, "
        f"{lost:.0f} s lost (the killed trial's work, a second process start and analysis load).",
    ]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
