"""Preemption: how much training a search loses per SIGTERM when it saves in-trial checkpoints.

The issue's target: a resnet-sized search killed with SIGTERM every few minutes and resumed
loses at most one checkpoint interval of work per kill. Three runs of the same search, each a
real ``autotune search`` process with one thread, on the same task and seed:

- A: uninterrupted, the reference.
- B: with ``--checkpoint-every``, sent SIGTERM ``--kill-every`` seconds after each start, then
  started again with the same command, until a run exits 0.
- B': as many kills, at the same times after each start, without checkpoints (skipped with
  ``--no-contrast``): a killed trial is replaced by a new one from epoch 0, the loss checkpoints
  exist to avoid.

Trials train ``--epochs`` each (``--patience`` defaults to it), so their length is known and
comparable with ``--checkpoint-every``. On one thread the search is deterministic per seed: B
ends with A's best unless a kill came before a trial's first checkpoint (that trial is then
replaced by a new one trained with another seed, by design); the verdict says which.

Work lost per kill is measured two ways. Directly, at each kill: the seconds between the kill
and the last thing the next run continues from (the killed trial's checkpoint file if it wrote
or kept one, else the trial's start), and the whole epochs it had trained past that checkpoint
(its last reported epoch minus the checkpoint's epoch, read from the file). Overall: the trials'
time (start to end of every trial, the killed ones included) and the epochs they trained (a
continued trial's restored epochs not counted again), B minus A, per kill. A checkpoint is
written at the end of the first epoch after the interval has passed, so a kill can lose up to
one interval plus one epoch.

Run: python bench/preemption.py [--task resnet18|demo] [--trials 6] [--epochs 40]
         [--patience N] [--checkpoint-every 0.5] [--kill-every 60] [--max-kills 20]
         [--seed 0] [--no-contrast]
         [--workdir DIR] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import peers
import torch
from _shared import emit
from optuna.trial import FrozenTrial, TrialState

from autotune.paths import resume_path
from autotune.search.record import TrialRecord
from autotune.search.trials import continued, finished

optuna.logging.set_verbosity(optuna.logging.ERROR)

SIGTERM_EXIT = 143
TARGET = "a search killed with SIGTERM and resumed loses at most one checkpoint interval per kill"


@dataclass
class Kill:
    """One SIGTERM: the exit code it got, and the training the next run has to redo."""

    rc: int
    trial: int | None = None
    lost_seconds: float = 0.0
    lost_epochs: int = 0
    from_start: bool = False
    """The killed trial had no checkpoint: the next run samples a new trial in its place."""


@dataclass
class Run:
    """One variant (A, B, B'): its runs' summed wall time, its kills, and the study it left."""

    name: str
    wall: float = 0.0
    kills: list[Kill] = field(default_factory=list)
    restored: dict[int, int] = field(default_factory=dict)
    """Trial number -> the epoch its next continuation restores (read before each restart)."""
    trial_seconds: float = 0.0
    epochs: int = 0
    counted: int = 0
    best: float | None = None
    rc: int = 0
    problems: list[str] = field(default_factory=list)
    """What the feature got wrong: a trial left RUNNING by a kill, a continued trial that did
    not restore the epoch its checkpoint held."""


def env() -> dict[str, str]:
    """One thread everywhere, as ``peers.timed`` runs its searches: the search is then
    deterministic per seed, so B's best can be compared with A's."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def load(out: Path) -> optuna.Study | None:
    """The search's study, or None before the first run created it."""
    from autotune.errors import StorageError
    from autotune.search.study import load_study

    try:
        return load_study(None, out)
    except StorageError:
        return None


def checkpoint_epochs(out: Path, study: optuna.Study | None) -> dict[int, tuple[int, float]]:
    """Trial number -> (epoch saved, file's mtime) of every in-trial checkpoint on disk: what
    the next run continues from."""
    if study is None:
        return {}
    folder = out / "checkpoints" / study.study_name
    saved = {}
    for t in study.get_trials(deepcopy=False):
        path = resume_path(folder, t.number)
        if path.is_file():
            loop = torch.load(path, map_location="cpu", weights_only=True)["loop"]
            saved[t.number] = (int(loop["epoch"]), path.stat().st_mtime)
    return saved


def reached(trial: FrozenTrial) -> int:
    """The last epoch the trial reported (restored epochs are reported again, so this is the
    epoch its training got to, in the numbering of the trial it continues)."""
    return max(trial.intermediate_values, default=0)


def account_kill(run: Run, out: Path, before: set[int], killed_at: float, rc: int) -> Kill:
    """What the kill lost: the killed trial's training since what the next run restores."""
    kill = Kill(rc=rc)
    study = load(out)
    if study is None:
        return kill
    saved = checkpoint_epochs(out, study)
    stopped = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.number not in before and TrialRecord.from_trial(t).interrupted
    ]
    left = [t.number for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    if left:
        run.problems.append(f"kill {len(run.kills) + 1} left trials {left} RUNNING")
    for t in stopped:
        number = continued(t)
        epoch, mtime = saved.get(number, (0, 0.0))
        start = t.datetime_start.timestamp() if t.datetime_start else killed_at
        kill.trial = t.number
        kill.lost_seconds += killed_at - max(start, mtime)
        kill.lost_epochs += reached(t) - epoch
        kill.from_start |= number not in saved
    run.restored = {n: e for n, (e, _) in saved.items()}
    return kill


def trained_epochs(trial: FrozenTrial, restored: dict[int, int]) -> int:
    """Epochs the trial trained itself: its last reported epoch less the epochs it restored
    (recorded as ``resumed_after`` when it ended; else what its checkpoint held at its start)."""
    rec = TrialRecord.from_trial(trial)
    if rec.resumed_after is not None:
        return reached(trial) - rec.resumed_after
    if rec.resumes is not None:
        return reached(trial) - restored.get(trial.number, 0)
    return reached(trial)


def search(command: list[str], run: Run, kill_every: float | None, max_kills: int) -> None:
    """Run ``command``; with ``kill_every``, SIGTERM it that many seconds after each start and
    start it again, until a run exits 0 (or fails otherwise). After ``max_kills`` the search is
    left to finish: without checkpoints, a trial longer than the time between kills never
    would."""
    out = Path(command[command.index("--out") + 1])
    log = out.parent / f"{out.name}.log"
    restored_at: dict[int, int] = {}  # trial number -> epoch restored when it started
    while True:
        study = load(out)
        before = {t.number for t in study.get_trials(deepcopy=False)} if study else set()
        restorable = dict(run.restored)
        limit = kill_every if kill_every and len(run.kills) < max_kills else None
        start = time.perf_counter()
        process, killed_at = supervise(command, log, limit)
        run.wall += time.perf_counter() - start
        _note_restored(out, before, restorable, restored_at)
        if killed_at is None or process.returncode == 0:
            run.rc = process.returncode
            break
        run.kills.append(account_kill(run, out, before, killed_at, process.returncode))
        if process.returncode != SIGTERM_EXIT:
            run.rc = process.returncode
            break
    summarize(run, out, restored_at)


def supervise(
    command: list[str], log: Path, limit: float | None
) -> tuple[subprocess.Popen[bytes], float | None]:
    """Run ``command`` once, SIGTERM it after ``limit`` seconds; the process and when it was
    signalled (epoch seconds, None if it ended first). A Ctrl-C of the benchmark stops the
    search too, rather than leaving it running."""
    with log.open("a") as f:
        process = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=env())
        start = time.perf_counter()
        try:
            while process.poll() is None:
                if limit is not None and time.perf_counter() - start >= limit:
                    killed_at = time.time()
                    process.send_signal(signal.SIGTERM)
                    process.wait()
                    return process, killed_at
                time.sleep(0.2)
        except BaseException:
            process.send_signal(signal.SIGTERM)
            process.wait()
            raise
    return process, None


def _note_restored(
    out: Path, before: set[int], restorable: dict[int, int], restored_at: dict[int, int]
) -> None:
    """Which epoch each trial started in this run restored: the checkpoint of the trial it
    continues, as it was on disk when the run started."""
    study = load(out)
    for t in study.get_trials(deepcopy=False) if study else []:
        if t.number not in before and TrialRecord.from_trial(t).resumes is not None:
            restored_at[t.number] = restorable.get(continued(t), 0)


def summarize(run: Run, out: Path, restored_at: dict[int, int]) -> None:
    """The study's totals: trial time and epochs trained (killed trials included), the trials
    that count toward ``--trials``, and the best value."""
    study = load(out)
    if study is None:
        return
    for t in study.get_trials(deepcopy=False):
        rec = TrialRecord.from_trial(t)
        if t.state == TrialState.COMPLETE and rec.resumes is not None:
            expected, got = restored_at.get(t.number, 0), rec.resumed_after or 0
            if got != expected:
                run.problems.append(
                    f"trial {t.number} continued after epoch {got}, its checkpoint held {expected}"
                )
        if t.datetime_start and t.datetime_complete:
            run.trial_seconds += (t.datetime_complete - t.datetime_start).total_seconds()
        run.epochs += trained_epochs(t, restored_at)
    run.counted = finished(study)
    run.best = (
        study.best_value if any(t.state == TrialState.COMPLETE for t in study.trials) else None
    )


def per_kill(b: Run, a: Run, value: str) -> str:
    """B's excess over A in ``value`` (wall, trial_seconds, epochs), per kill."""
    if not b.kills:
        return "n/a"
    extra = (getattr(b, value) - getattr(a, value)) / len(b.kills)
    return f"{extra:.1f}" if isinstance(extra, float) else str(extra)


def row(run: Run, a: Run) -> str:
    """One table row: the run's totals, and per kill what it lost against A."""
    kills = run.kills
    lost = [k.lost_seconds for k in kills if k.trial is not None]
    epochs = [k.lost_epochs for k in kills if k.trial is not None]
    codes = sorted({k.rc for k in kills})
    cells = [
        run.name,
        f"{len(kills)} ({len(lost)})",
        ",".join(map(str, codes)) or "",
        f"{run.wall:.1f}",
        f"{run.trial_seconds:.1f}",
        str(run.epochs),
        per_kill(run, a, "wall") if run is not a else "",
        per_kill(run, a, "trial_seconds") if run is not a else "",
        f"{sum(lost) / len(lost):.1f} / {max(lost):.1f}" if lost else "",
        f"{sum(epochs) / len(epochs):.1f} / {max(epochs)}" if epochs else "",
        f"{run.counted}",
        "n/a" if run.best is None else f"{run.best:.4f}",
    ]
    return "| " + " | ".join(cells) + " |"


def report(runs: list[Run], args: argparse.Namespace) -> list[str]:
    """The Markdown section: heading, command, machine, table and verdict."""
    a, b = runs[0], runs[1]
    interval = 60 * args.checkpoint_every
    lines = [
        f"### Preemption: SIGTERM every {args.kill_every:g} s, checkpoints every "
        f"{interval:g} s ({time.strftime('%Y-%m-%d')})",
        "",
        f"`{shlex.join(['python', 'bench/preemption.py', *sys.argv[1:]])}`  ",
        f"{peers.machine()}. Task {args.task}, {args.trials} trials, --epochs {args.epochs}, "
        f"seed {args.seed}.",
        "",
        "| run | kills (in a trial) | exit codes | wall s | trial s | epochs trained "
        "| extra wall s / kill | extra trial s / kill | lost s / kill (mean / max) "
        "| lost epochs / kill (mean / max) | trials counted | best |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(row(r, a) for r in runs),
        "",
        "Lost s: from the last checkpoint the next run restores (or the killed trial's start) "
        "to the kill. Trial s: start to end of every trial, killed ones included.",
        *(f"{r.name}: {p}  " for r in runs[2:] for p in r.problems),
        "",
        verdict(a, b, args, interval),
    ]
    return lines


def verdict(a: Run, b: Run, args: argparse.Namespace, interval: float) -> str:
    """One line against the target, with the checks that B is the same search as A. A best
    that differs because a kill came before a trial's first checkpoint is explained, not
    failed: that trial is replaced by design (the preemption guide)."""
    lost = [k.lost_seconds for k in b.kills if k.trial is not None]
    checks, notes = [], []
    if any(k.rc != SIGTERM_EXIT for k in b.kills) or b.rc != 0:
        checks.append(f"exit codes {sorted({k.rc for k in b.kills})}, last {b.rc}")
    if b.counted != args.trials:
        checks.append(f"B counted {b.counted} trials, not {args.trials}")
    checks += b.problems
    early = sum(k.from_start for k in b.kills)
    if b.best != a.best and early:
        notes.append(
            f"B's best {b.best} differs from A's {a.best}: {early} kill(s) came before the "
            "trial's first checkpoint, a new trial took its place with its own number as seed, "
            "so the trials after it differ from A's"
        )
    elif b.best != a.best:
        checks.append(f"B's best {b.best} differs from A's {a.best}")
    else:
        notes.append("B's best equals A's")
    worst = max(lost, default=0.0)
    met = bool(b.kills) and worst <= interval and not checks
    return (
        f"Target ({TARGET}): worst loss {worst:.1f} s vs interval {interval:g} s over "
        f"{len(b.kills)} kills; {'; '.join(checks + notes)}: **{'met' if met else 'not met'}**"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["resnet18", "demo"], default="resnet18")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--checkpoint-every", type=float, default=0.5, help="minutes")
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--patience", type=int, help="passed on (default: --epochs)")
    parser.add_argument("--max-kills", type=int, default=20, help="then let it finish")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-contrast", action="store_true", help="skip B' (no checkpoints)")
    parser.add_argument("--workdir", type=Path, help="keep the task, logs and runs here")
    parser.add_argument("--write", type=Path, help="append the result to this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(1)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="autotune-preemption-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = json.loads(peers.build_tasks([args.task], work)[args.task].read_text())
    print(f"work folder {work}", flush=True)
    variants: list[tuple[str, list[str], float | None]] = [
        ("A uninterrupted", ["--checkpoint-every", str(args.checkpoint_every)], None),
        ("B killed", ["--checkpoint-every", str(args.checkpoint_every)], args.kill_every),
    ]
    if not args.no_contrast:
        variants.append(("B' killed, no checkpoints", [], args.kill_every))
    runs: list[Run] = []
    for name, extra, kill_every in variants:
        out = work / name.split()[0].replace("'", "2")
        command = peers.search_command(spec, out, args.trials, args.seed)
        # No early stopping by default: every trial trains --epochs, its length known.
        patience = args.patience or args.epochs
        options = ["--epochs", str(args.epochs), "--patience", str(patience), *extra]
        at = command.index("--out")
        command[at:at] = options
        run = Run(name)
        # B' gets the kills B got, at the same times, then finishes: without checkpoints a
        # trial longer than --kill-every would never end.
        most = len(runs[1].kills) if len(runs) == 2 else args.max_kills
        search(command, run, kill_every, most)
        print(f"{name}: {len(run.kills)} kills, wall {run.wall:.1f}s, rc {run.rc}", flush=True)
        runs.append(run)
    emit(report(runs, args), args.write)


if __name__ == "__main__":
    main()
