"""The default study file side by side: a search whose study is the journal file (the default),
against the same search in an output folder that holds an empty ``study.db``, which the search
then uses as the default of earlier versions (SQLite with its write-ahead log).

Whole-process walls, interleaved (journal, SQLite, journal, ...) ``--repeats`` times, one torch
thread, a cold analysis cache each; checks that both runs recorded the same trials (number,
state, value) and exported the same trial with the same test accuracy.

Run: python bench/study_file_ab.py [--task tabular] [--trials 30] [--repeats 3] [--write FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import optuna
import peers
import yaml
from _shared import emit

from autotune.search.study import load_study

SEED = 0


def run(spec: dict[str, Any], out: Path, trials: int, older: bool) -> tuple[float, Any]:
    """One search into ``out``: its wall, and what it recorded and exported."""
    command = peers.search_command(spec, out, trials, SEED)  # removes any earlier ``out``
    if older:
        out.mkdir(parents=True)
        optuna.storages.RDBStorage(f"sqlite:///{out / 'study.db'}").engine.dispose()
    cache = peers.cold_cache(out.parent / f"{out.name}-cache")
    rc, wall = peers.timed(command, out.parent / f"{out.name}.log", AUTOTUNE_CACHE_DIR=str(cache))
    if rc != 0:
        raise SystemExit(f"{out.name}: rc {rc}\n{peers.tail(out.parent / f'{out.name}.log')}")
    study = load_study(None, out)
    trials_seen = [(t.number, t.state.name, t.values) for t in study.trials]
    config = yaml.safe_load((out / "best" / "config.yaml").read_text())
    exported = (config["trial"], config["metrics"]["test_accuracy"])
    return wall, (trials_seen, exported, sorted(p.name for p in out.glob("study.*")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["tabular", "demo"], default="tabular")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="keep the task, logs and runs here")
    parser.add_argument("--write", type=Path, help="append the result to this Markdown file")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="autotune-study-file-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = json.loads(peers.build_tasks([args.task], work)[args.task].read_text())
    walls: dict[str, list[float]] = {"journal": [], "sqlite": []}
    seen: dict[str, Any] = {}
    for _ in range(args.repeats):
        for name in walls:
            wall, seen[name] = run(spec, work / name, args.trials, older=name == "sqlite")
            walls[name].append(wall)
            print(f"{name}: {wall:.2f} s", flush=True)
    j, s = (statistics.median(walls[n]) for n in ("journal", "sqlite"))
    same = seen["journal"][:2] == seen["sqlite"][:2]
    lines = [
        f"### The study file: journal against SQLite, {args.task}",
        "",
        f"Command: `python bench/study_file_ab.py --task {args.task} --trials {args.trials} "
        f"--repeats {args.repeats}`  ",
        f"Machine: {peers.machine()}; interleaved, cold analysis cache each run.",
        "",
        "| study file | walls s | median s |",
        "| --- | --- | ---: |",
        *(
            f"| {n} ({', '.join(seen[n][2])}) | {', '.join(f'{w:.2f}' for w in walls[n])} "
            f"| {statistics.median(walls[n]):.2f} |"
            for n in walls
        ),
        "",
        f"Journal / SQLite: {j / s:.2f}. Same trials (number, state, value) and the same export "
        f"(trial {seen['journal'][1][0]}, test accuracy {seen['journal'][1][1]:.4f}): {same}.",
    ]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
