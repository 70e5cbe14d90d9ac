"""autotune at the scale users work at: torchvision architectures, thousands of images, its peers.

Tasks (``bench/real_tasks.py``): resnet18, mobilenet_v3_small and a small ViT, each trained by
the bench on 2,000 clean MNIST images (cached in the work folder) and searched on all 5,000
rotated, tinted, blurred and noisy (3,000 / 1,000 / 1,000 train / validation / test).

Methods are ``bench/peers.py``'s, run the same way (each its own process, its whole wall time
measured, one torch thread): P0 the source, P1 the standard fine-tune, P2 the plain Optuna
script with the same number of trials, autotune's default search, autotune with
``--max-params`` (0.3 here), and P3, L1 pruning to that run's parameter count + P1's fine-tune
(to the budget's count when ``--methods`` leaves that run out, or it exported nothing).

``--parallel 2`` runs two methods at once on a two-core machine: autotune beside P2, then the
``--max-params`` search beside P1, then P3 beside P0. The two processes of a pair share the
machine alike, so autotune's wall against P2's is still measured side by side.

Run: python bench/real_scale.py [--archs resnet18 mobilenet_v3_small vit] [--seeds 0 1 2]
         [--trials 30] [--size 32] [--parallel 2] [--device cpu|cuda] [--max-params 0.3]
         [--workdir DIR] [--results FILE] [--write BENCHMARKS.md]
     python bench/real_scale.py --table-only FILE [FILE ...] [--write BENCHMARKS.md]
         (several results files: runs of the same tasks made apart, e.g. one per method group)
     python bench/real_scale.py --table-only FILE [FILE ...] --refresh BENCHMARKS.md
         (the reviewed section's generated parts in place: its Command, Machine and Seeds
         lines, tables, targets and where each search's trials went; its title, prose and
         per-seed tables are the reader's)
     python bench/real_scale.py --table-only FILE --save bench/results/real-scale/NAME.jsonl
         (a run's results kept in the repository, with each search's stages and leaderboard:
         what the table and its prose quote, after the run folders are gone)
"""

from __future__ import annotations

import argparse
import gzip
import json
import shlex
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import peers
import real_tasks
import torch
from _shared import commit_line, emit

PAIRS = (("autotune", "p2"), ("autotune-slim", "p1"), ("p3", "p0"))
"""What runs side by side with ``--parallel 2``; in this order one at a time otherwise (P3
needs the ``--max-params`` run's size)."""
TARGETS = [
    "default search: mean test accuracy >= max(P1, P2), at <= 50% of the source's parameters "
    "on every seed, in no more wall time than P2",
    "--max-params: within 1 point of P2 on the mean, and above P3 at the same size",
]
"""The issue's targets, printed next to the numbers; nothing here is tuned toward them."""


def goals(
    tasks: list[str],
    ok: dict[tuple[str, str], list[dict[str, Any]]],
    failed: dict[tuple[str, str], dict[int, int]],
) -> list[str]:
    """The targets judged on each task's successful runs, each method on the seeds autotune's
    run (default, or ``--max-params``) had: peers run on more seeds are not compared on them.
    Each task gets its own verdict; a task without the runs a target needs is named as not
    judged, not counted as missing it, except where autotune ran and failed on every seed
    (``failed``: each run's exit code by seed), which misses the target."""

    def seeds_of(task: str, method: str) -> set[int]:
        return {r["seed"] for r in ok[(task, method)]}

    def mean_acc(task: str, method: str, seeds: set[int]) -> float | None:
        return peers._mean(peers._acc([r for r in ok[(task, method)] if r["seed"] in seeds]))

    def missing(task: str, means: dict[str, float | None]) -> str:
        """Names what a target lacks: autotune's run, or a peer's on autotune's seeds."""
        first = next(iter(means))
        codes = failed.get((task, first))
        if means[first] is None and codes:
            return (
                f"{task}: the {first} search failed on seeds {sorted(codes)} (exit codes "
                f"{sorted(set(codes.values()))}; 3: nothing exported): **not met**"
            )
        if means[first] is None:
            return f"{task}: not judged (no {first} run)"
        absent = ", ".join(m for m, v in means.items() if v is None)
        return f"{task}: not judged (no {absent} run on {first}'s seeds)"

    parts = []
    for task in tasks:
        seeds = seeds_of(task, "autotune")
        means = {m: mean_acc(task, m, seeds) for m in ("autotune", "p1", "p2")}
        at, p1, p2 = means.values()
        runs, p2_runs = ok[(task, "autotune")], ok[(task, "p2")]
        if at is None or p1 is None or p2 is None:
            parts.append(missing(task, means))
            continue
        best, sizes = max(p1, p2), peers._ratio(runs, "params")
        wall = peers.per_seed_ratio(runs, p2_runs)
        epochs = peers.per_seed_ratio(runs, p2_runs, "epochs_trained")
        beside = peers.paired_seeds(runs, p2_runs)  # walls compare within one bench run only
        hits = {"accuracy": at >= best, "size": bool(sizes) and max(sizes) <= 0.5}
        if wall is not None:
            hits["time"] = wall <= 1
        missed = [name for name, hit in hits.items() if not hit]
        if missed:
            verdict = f"not met ({', '.join(missed)})"
        elif wall is None:
            verdict = "not judged on time (no wall timed beside P2's)"
        else:
            verdict = "met" if beside == sorted(seeds) else "met on the seeds timed beside P2"
        size = f"params <= {100 * max(sizes):.1f}%" if sizes else "params n/a"
        timed = (
            f"wall {wall:.2f}x P2 (timed beside it on seeds {beside})"
            if wall is not None
            else "no wall timed beside P2's"
        )
        parts.append(
            f"{task} (seeds {sorted(seeds)}): {100 * (at - best):+.1f} pts against "
            f"max(P1, P2), {size}, {timed}"
            + (f", epochs {epochs:.2f}x P2's" if epochs else "")
            + f": **{verdict}**"
        )
    lines = [f"- {TARGETS[0]}: {'; '.join(parts)}"]

    parts = []
    for task in tasks:
        seeds = seeds_of(task, "autotune-slim")
        means = {m: mean_acc(task, m, seeds) for m in ("autotune-slim", "p2", "p3")}
        slim, p2, p3 = means.values()
        if slim is None or p2 is None or p3 is None:
            parts.append(missing(task, means))
            continue
        met = slim >= p2 - 0.01 and slim > p3
        parts.append(
            f"{task} (seeds {sorted(seeds)}): {100 * (slim - p2):+.1f} pts against P2, "
            f"{100 * (slim - p3):+.1f} against P3: **{'met' if met else 'not met'}**"
        )
    lines.append(f"- {TARGETS[1]}: {'; '.join(parts)}")
    return lines


def build(archs: list[str], size: int, work: Path) -> dict[str, Path]:
    """Each task's files and the JSON spec that peers.py's workers read."""
    torch.set_num_threads(1)
    specs = {}
    for arch in archs:
        start = time.perf_counter()
        spec = real_tasks.build(arch, work, seed=peers.TASK_SEED, size=size)
        name = f"{arch}-{size}px"
        specs[name] = work / f"{name}.json"
        specs[name].write_text(json.dumps(spec))
        print(f"task {name}: built in {time.perf_counter() - start:.1f}s {spec}", flush=True)
    return specs


def task_note(spec: dict[str, Any]) -> str:
    train, val, test = spec["sizes"]
    return (
        f"{spec['image_size']} px; the source scores "
        f"{100 * spec['source_clean_test_accuracy']:.1f}% on the clean test images and "
        f"{100 * spec['source_test_accuracy']:.1f}% on the target's (rotated, tinted, blurred, "
        f"noisy); {train}/{val}/{test} train/val/test"
    )


def budget(spec_path: Path, args: argparse.Namespace) -> int:
    """The parameter count of ``--max-params``: what P3 prunes to when the ``--max-params`` search
    is not part of this run (a run of it made apart may have exported less)."""
    model, _ = peers.load_task(json.loads(spec_path.read_text()))
    return int(float(args.max_params) * peers.count_params(model))


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    work = args.workdir or Path(tempfile.mkdtemp(prefix="autotune-real-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results = args.results or work / "results.jsonl"
    start = time.perf_counter()
    specs = build(args.archs, args.size, work)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "command": shlex.join(["python", "bench/real_scale.py", *sys.argv[1:]]),
        "machine": peers.machine()
        + (f"; {args.parallel} methods at once" if args.parallel > 1 else "")
        + (f"; device {args.device}" if args.device != "cpu" else ""),
        "seeds": args.seeds,
        "trials": args.trials,
        "max_epochs": args.max_epochs,
        "patience": args.patience,
        "max_params": args.max_params,
        "commit": commit_line(),
        "tasks": {name: task_note(json.loads(path.read_text())) for name, path in specs.items()},
    }
    records: list[dict[str, Any]] = [{"meta": meta}]
    results.write_text(json.dumps({"meta": meta}) + "\n")
    print(f"work folder {work}; results {results}", flush=True)

    def one(method: str, task: str, seed: int, slim_params: int | None) -> dict[str, Any]:
        record = with_stages(
            peers.run_one(method, task, specs[task], seed, args, work, slim_params)
        )
        peers.keep(record, records, results, peers.label(method, meta))
        return record

    with ThreadPoolExecutor(args.parallel) as pool:
        for task in specs:
            for seed in args.seeds:
                slim_params = None if "autotune-slim" in args.methods else budget(specs[task], args)
                for pair in PAIRS:
                    wanted = [m for m in pair if m in args.methods]
                    runs = [(m, task, seed, slim_params) for m in wanted]
                    for record in pool.map(lambda run: one(*run), runs):
                        if record["method"] == "autotune-slim":
                            # P3 prunes to the size it exported; to the budget's count when it
                            # exported nothing (a budget the space cannot reach).
                            ok = record.get("rc") == 0 and record.get("params")
                            slim_params = record["params"] if ok else budget(specs[task], args)
    done = {"done": time.perf_counter() - start}
    records.append(done)
    with results.open("a") as f:
        f.write(json.dumps(done) + "\n")
    print(f"whole run {done['done']:.0f}s; raw results in {results}", flush=True)
    return records, meta


def ran_at(meta: dict[str, Any], name: str) -> str:
    """The code a results file's runs measured, as the bench recorded it when they ran
    (``_shared.commit_line``'s words); files written before it did say so."""
    said = meta.get("commit")
    return f"`{name}` {said[0].lower()}{said[1:-1]}" if said else f"`{name}`: commit not recorded"


def merged(paths: list[Path]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The runs of several results files under the first one's meta, every command named and
    every machine line and task note that differs (a dependency upgraded between runs, a
    source model trained again on another machine) kept."""
    records, meta = peers.read_results(paths[0])
    records = [{**r, "run": 0} if "method" in r else r for r in records]
    machines = [meta["machine"]]
    commits = [ran_at(meta, paths[0].name)]
    for run, path in enumerate(paths[1:], start=1):
        more, other = peers.read_results(path)
        commits.append(ran_at(other, path.name))
        meta["command"] += f"` and `{other['command']}"
        for task, note in other.get("tasks", {}).items():
            known = meta.setdefault("tasks", {}).setdefault(task, note)
            if note not in known:  # a source trained again elsewhere scores otherwise
                meta["tasks"][task] = f"{known}; in `{path.name}` its own source: {note}"
        if other["machine"] not in machines:
            machines.append(other["machine"])
        records += [{**r, "run": run} for r in more if "method" in r]
    meta["machine"] = "; or ".join(machines)
    meta["commit"] = "From " + "; ".join(commits) + "."
    records = [with_stages(peers.with_epochs(r)) for r in records]
    if len(paths) > 1:  # runs made apart: their whole-run times add up to no one wall
        records = [r for r in records if "done" not in r]
    return records, meta


def stages(out: Path) -> dict[str, Any] | None:
    """Where the search in ``out`` spent its trials, read off its ``leaderboard.csv``: per stage
    its trials, how many stopped early or were not trained, its epochs and trial seconds; the
    parent stage 2 slimmed and the trial exported. None without the leaderboard."""
    import csv

    board = out / "leaderboard.csv"
    if not board.is_file():
        return None
    with board.open() as f:
        rows = list(csv.DictReader(f))
    per_stage = []
    for stage in ("1", "2"):
        mine = [row for row in rows if row["stage"] == stage]
        # A pruned trial with no epoch was not trained (a near copy, over a budget).
        cut = [int(row["epochs"] or 0) for row in mine if row["state"] == "PRUNED"]
        per_stage.append(
            {
                "stage": stage,
                "trials": len(mine),
                "stopped_early": sum(e > 0 for e in cut),
                "not_trained": cut.count(0),
                "epochs": sum(int(row["epochs"] or 0) for row in mine),
                "seconds": sum(float(row["seconds"] or 0) for row in mine),
            }
        )
    return {
        "stages": per_stage,
        "parents": sorted({row["parent"] for row in rows if row["parent"]}),
        "exported": [row["trial"] for row in rows if row["exported"] == "True"],
        "board": str(board),
    }


def with_stages(record: dict[str, Any]) -> dict[str, Any]:
    """An autotune record with ``stages``' summary of its search, read while its run folder
    exists: a results file that holds it needs nothing else to rebuild the table."""
    if not record.get("method", "").startswith("autotune") or "stages" in record:
        return record
    out = peers.run_folder(record)
    summary = stages(out) if out is not None else None
    return {**record, "stages": summary} if summary else record


def save(results: Path, to: Path) -> None:
    """Keep a bench run's ``results`` in the repository as ``to``: each search's epochs and
    stages filled in, and its ``leaderboard.csv`` and study (gzipped) copied into the folder
    named as ``to`` less its suffix, so that the table and what its prose quotes outlive the
    run folders (kept in a machine's /tmp, the first real-scale runs' files were lost with it)."""
    records, _ = peers.read_results(results)
    boards = to.with_suffix("")
    kept = []
    for record in records:
        record = with_stages(peers.with_epochs(record))
        summary = record.get("stages")
        if summary:
            board = Path(summary["board"])
            copy = boards / f"{board.parent.name}-leaderboard.csv"
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(board, copy)
            # The study itself, for replays of its pruners on the recorded curves (gunzip it).
            journal = board.parent / "study.journal"
            if journal.is_file():
                with (
                    journal.open("rb") as f,
                    gzip.open(boards / f"{board.parent.name}.journal.gz", "wb") as z,
                ):
                    shutil.copyfileobj(f, z)
            record = {**record, "stages": {**summary, "board": str(copy)}}
        kept.append(record)
    to.parent.mkdir(parents=True, exist_ok=True)
    to.write_text("".join(json.dumps(r) + "\n" for r in kept))
    print(f"kept {len(kept)} lines in {to}, leaderboards in {boards}/")


def stage_lines(records: list[dict[str, Any]]) -> list[str]:
    """Where each autotune search's trials went, by stage (``stages``): trials, how many
    stopped early, epochs, trial seconds per epoch; the parent stage 2 slimmed and the trial
    exported. What the prose of a review quotes."""
    lines = []
    for r in records:
        summary = r.get("stages")
        if not summary:
            continue
        said = []
        for st in summary["stages"]:
            stops = f"{st['stopped_early']} stopped early, {st['not_trained']} not trained"
            per = f", {st['seconds'] / st['epochs']:.1f} s an epoch" if st["epochs"] else ""
            said.append(
                f"stage {st['stage']} {st['trials']} trials ({stops}), {st['epochs']} epochs{per}"
            )
        lines.append(
            f"- {r['task']} {r['method']} seed {r['seed']}: {'; '.join(said)}; parent "
            f"{', '.join(summary['parents']) or '-'}; exported "
            f"{', '.join(summary['exported']) or '-'} (`{summary['board']}`)"
        )
    return (
        ["", "Where the searches' trials went (each search's `leaderboard.csv`):", "", *lines]
        if lines
        else []
    )


SECTION = "### autotune at real scale"
"""The title's start of the reviewed section that ``--refresh`` updates (the first)."""
GENERATED = ("Command: ", "Machine: ", "Seeds [")
"""The lines of that section the bench writes, each replaced whole."""


def refresh(path: Path, lines: list[str]) -> None:
    """Replace, in ``path``'s first real-scale section, the lines that start as ``GENERATED``
    ones do and everything from the first task's table to the last target (or the last line of
    ``stage_lines``) with ``lines``'."""
    text = path.read_text().split("\n")
    start = next(i for i, line in enumerate(text) if line.startswith(SECTION))
    end = next((i for i in range(start + 1, len(text)) if text[i].startswith("### ")), len(text))
    section = text[start:end]
    for prefix in GENERATED:
        new = next(line for line in lines if line.startswith(prefix))
        at = next(i for i, line in enumerate(section) if line.startswith(prefix))
        section[at] = new.rstrip() + ("  " if section[at].endswith("  ") else "")

    def block(of: list[str]) -> tuple[int, int]:
        first = next(i for i, line in enumerate(of) if line.startswith("**"))
        last = max(
            i
            for i, line in enumerate(of)
            if line.startswith("- --max-params:") or line.endswith("leaderboard.csv`)")
        )
        return first, last + 1

    first, last = block(section)
    new_first, new_last = block(lines)
    section[first:last] = lines[new_first:new_last]
    path.write_text("\n".join(text[:start] + section + text[end:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--archs", nargs="+", choices=real_tasks.ARCHS, default=list(real_tasks.ARCHS)
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--size", type=int, default=32, help="image size in pixels")
    parser.add_argument("--parallel", type=int, choices=(1, 2), default=1)
    parser.add_argument(
        "--device", default="cpu", help="where the P-methods train (autotune: auto)"
    )
    parser.add_argument("--max-params", default="0.3", help="the slimmed search's budget")
    parser.add_argument("--methods", nargs="+", choices=[m for pair in PAIRS for m in pair],
                        default=[m for pair in PAIRS for m in pair])  # fmt: skip
    parser.add_argument("--results", type=Path, help="write raw per-run results (JSON lines)")
    parser.add_argument(
        "--table-only", type=Path, nargs="+", help="rebuild the table from results files"
    )
    parser.add_argument("--workdir", type=Path, help="keep tasks, cached sources, logs and runs")
    parser.add_argument("--write", type=Path, help="write the result into this Markdown file")
    parser.add_argument(
        "--refresh", type=Path, help="with --table-only: update the reviewed section in place"
    )
    parser.add_argument(
        "--save",
        type=Path,
        help="with one --table-only file: keep it whole in FILE (bench/results/)",
    )
    args = parser.parse_args()
    args.quick, args.max_epochs, args.patience = False, peers.MAX_EPOCHS, peers.PATIENCE
    if args.save is not None:
        if len(args.table_only or []) != 1:
            parser.error("--save takes exactly one --table-only results file")
        return save(args.table_only[0], args.save)
    if args.table_only:
        records, meta = merged(args.table_only)
    else:
        records, meta = run(args)
    failed: dict[tuple[str, str], dict[int, int]] = {}
    for r in records:
        if "method" in r and r.get("rc") != 0:
            failed.setdefault((r["task"], r["method"]), {})[r["seed"]] = r.get("rc")
    lines = peers.table(
        records,
        meta,
        title="autotune at real scale",
        goals=lambda tasks, ok: goals(tasks, ok, failed),
    )
    lines += stage_lines(records)
    # The code the runs measured, from their results files: not this checkout's commit.
    lines[2:2] = [meta.get("commit", "Commit not recorded.") + "  "]
    emit(lines, args.write, commit=False)
    if args.refresh is not None:
        refresh(args.refresh, "\n".join(lines).split("\n"))


if __name__ == "__main__":
    main()
