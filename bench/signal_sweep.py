"""A SIGTERM at a random moment of a trial: does every search stop as the preemption guide says?

A scheduler's signal can land anywhere: in the training loop, inside a storage call, while an
in-trial checkpoint is written. Each run here is a real ``autotune search`` process on a small
task (one thread), with a checkpoint after every epoch (``--checkpoint-every 1e-9``), so that
writes and storage calls fill much of a trial; it is sent SIGTERM a random time (up to
``--spread`` seconds) after its first checkpoint appears. A run is right when it exits 143 with
exactly one trial recorded as interrupted, none failed and none left running. Anything else is
printed with the end of its log: "database is locked" (a query stopped half-way), a trial failed
with "unexpected pos" (torch.save stopped half-way), a search that ignored the signal.

``--streams`` runs that many searches at once, as a loaded machine would.

Run: python bench/signal_sweep.py [--task tabular|demo] [--runs 40] [--streams 2]
         [--spread 0.3] [--seed 0] [--workdir DIR] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import peers
from _shared import emit
from optuna.trial import TrialState

from autotune.search.study import load_study

optuna.logging.set_verbosity(optuna.logging.ERROR)

SIGTERM_EXIT = 143


def one_run(command: list[str], out: Path, delay: float) -> str:
    """Start the search, send SIGTERM ``delay`` s after its first checkpoint; the verdict."""
    log = out.with_suffix(".log")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("wb") as f:
        process = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=env)
    while not list(out.glob("checkpoints/*/resume_*.pt")) and process.poll() is None:
        time.sleep(0.02)
    if process.poll() is not None:
        return f"ended before its first checkpoint (rc {process.returncode})"
    time.sleep(delay)
    process.send_signal(signal.SIGTERM)
    rc = process.wait(timeout=300)
    study = load_study(None, out)
    trials = study.get_trials(deepcopy=False)
    stopped = [t for t in trials if t.user_attrs.get("interrupted")]
    failed = [t for t in trials if t.state == TrialState.FAIL and t not in stopped]
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if rc == SIGTERM_EXIT and len(stopped) == 1 and not failed and not running:
        return "right"
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    return (
        f"rc {rc}, {len(stopped)} interrupted, {len(failed)} failed, {len(running)} running: "
        + " / ".join(tail)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["tabular", "demo"], default="tabular")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--spread", type=float, default=0.3, help="seconds")
    parser.add_argument("--seed", type=int, default=0, help="of the delays and the searches")
    parser.add_argument("--workdir", type=Path, help="keep the task, logs and runs here")
    parser.add_argument("--write", type=Path, help="append the result to this Markdown file")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="autotune-signals-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = json.loads(peers.build_tasks([args.task], work)[args.task].read_text())
    draw = random.Random(args.seed)
    delays = [draw.uniform(0, args.spread) for _ in range(args.runs)]
    jobs = []
    for i, delay in enumerate(delays):
        out = work / f"run{i:03d}"
        command = peers.search_command(spec, out, 2, args.seed)
        at = command.index("--out")
        # Long trials, a checkpoint every epoch: the signal lands in a trial, often in a write.
        command[at:at] = ["--epochs", "60", "--patience", "60", "--checkpoint-every", "1e-9"]
        jobs.append((command, out, delay))
    start = time.perf_counter()
    with ThreadPoolExecutor(args.streams) as pool:
        verdicts = list(pool.map(lambda job: one_run(*job), jobs))
    wall = time.perf_counter() - start
    for i, verdict in enumerate(verdicts):
        if verdict != "right":
            print(f"run {i} (SIGTERM {delays[i]:.3f} s after the first checkpoint): {verdict}")
    counts = Counter("right" if v == "right" else "wrong" for v in verdicts)
    lines = [
        f"### A SIGTERM at a random moment of a trial ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `python bench/signal_sweep.py --task {args.task} --runs {args.runs} "
        f"--streams {args.streams} --spread {args.spread} --seed {args.seed}`  ",
        f"{args.runs} searches of the {args.task} task, {args.streams} at once, each sent SIGTERM "
        f"0-{args.spread} s after its first in-trial checkpoint (one after every epoch); "
        f"whole run {wall / 60:.1f} min.",
        "",
        "| runs | right: exit 143, one trial interrupted, none failed or running | wrong |",
        "| ---: | ---: | ---: |",
        f"| {args.runs} | {counts['right']} | {counts['wrong']} |",
    ]
    wrong = [f"- run {i}: {v}" for i, v in enumerate(verdicts) if v != "right"]
    emit(lines + (["", *wrong] if wrong else []), args.write)


if __name__ == "__main__":
    main()
