"""Bounding regressions, and distilling slimmed models from their full-size parent.

Two questions, on the peers benchmark's demo and tabular tasks (``bench/peer_tasks.py``), each
variant run as ``autotune search`` through the CLI with the same trials, epochs and seeds:

1. Does ``--max-flips 0.01`` keep validation accuracy within 1 point of the unconstrained
   search (variants ``free`` and ``flips``)?
2. At ``--max-params 0.5``, does offering the distillation losses (``distill``,
   ``focal_distill``: in stage 2 a slimmed model learns from its full-size parent) close at least
   half of the validation-accuracy gap between the slimmed model and that parent (variants
   ``slim``: the shipped space picked for the model, and ``slim-distill``: the same space with
   the two distillation losses added to ``loss`` and their weight and temperature sampled)?

Each run's exported ``config.yaml`` gives the model's validation and test accuracy and its
errors fixed and broken against the source; the study gives the slimmed model's parent.

Run: python bench/flips.py [--seeds 0 1 2] [--trials 10] [--epochs 8] [--patience 3]
         [--tasks demo tabular] [--variants free flips slim slim-distill]
         [--results FILE] [--write BENCHMARKS.md]
     python bench/flips.py --table-only FILE [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _shared import emit  # noqa: E402
from peers import build_tasks, machine, search_command, timed  # noqa: E402

VARIANTS = ("free", "flips", "slim", "slim-distill")
MAX_FLIPS = "0.01"
MAX_PARAMS = "0.5"
SHIPPED = {"demo": "vision", "tabular": "tabular"}
"""The space ``autotune search`` picks for each task's model (``search.prepare.space_for``)."""
DISTILLATION = {
    "loss": ["cross_entropy", "label_smoothing", "focal", "distill", "focal_distill"],
    "distill_weight": {"low": 0.1, "high": 0.9},
    "distill_temperature": {"low": 1.0, "high": 4.0},
}
"""Added to the shipped space for ``slim-distill``."""


def distill_space(task: str, folder: Path) -> Path:
    """The task's shipped space with the distillation losses offered, as a YAML file."""
    from autotune.search.space import load_space

    raw = dict(load_space(SHIPPED[task]).raw)
    raw.update(DISTILLATION)
    path = folder / f"{task}-distill.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_one(
    task: str, variant: str, seed: int, spec: dict[str, Any], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    tag = f"{task}-{variant}-s{seed}"
    out = work / tag
    command = search_command(spec, out, args.trials, seed)
    command += ["--space", SHIPPED[task]] if variant != "slim-distill" else []
    command += ["--epochs", str(args.epochs), "--patience", str(args.patience)]
    if variant == "flips":
        command += ["--max-flips", MAX_FLIPS]
    if variant.startswith("slim"):
        command += ["--max-params", MAX_PARAMS]
    if variant == "slim-distill":
        command += ["--space", str(distill_space(task, work))]
    rc, wall = timed(command, work / f"{tag}.log")
    record: dict[str, Any] = {"task": task, "variant": variant, "seed": seed, "rc": rc}
    record.update(command=shlex.join(command), wall_s=round(wall, 1))
    config_path = out / "best" / "config.yaml"
    if rc != 0 or not config_path.is_file():
        return {**record, "error": (work / f"{tag}.log").read_text()[-800:]}
    config = yaml.safe_load(config_path.read_text())
    metrics = config["metrics"]
    record.update(
        trial=config["trial"],
        val_accuracy=metrics["val_accuracy"],
        test_accuracy=metrics["test_accuracy"],
        val_broken=metrics["val_broken"],
        val_fixed=metrics["val_fixed"],
        test_broken=metrics["test_broken"],
        loss=config["params"].get("loss"),
        params=config["structure"]["params"]["model"],
        source_params=config["structure"]["params"]["source"],
    )
    from autotune.search.study import load_study

    study = load_study(None, out)
    parent = study.trials[config["trial"]].user_attrs.get("parent")
    if parent is not None:
        record["parent_val_accuracy"] = study.trials[parent].user_attrs.get("val_accuracy")
    return record


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def pm(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean(values) * scale:.1f} ± {sd:.1f}"


def table(records: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    ok = [r for r in records if r.get("rc") == 0 and "val_accuracy" in r]
    lines = [
        "### Negative flips and distillation (`bench/flips.py`, 2026-11-28)",
        "",
        f"Command: `{meta['command']}`",
        f"Machine: {meta['machine']}. {meta['note']}",
        "",
        "Mean ± sd over seeds of the exported model: accuracy in %, `broken` = validation "
        "samples the source got right that it gets wrong, `fixed` = source errors it gets right.",
        "",
        "| task | variant | seeds | val acc | test acc | val fixed | val broken | test broken "
        "| params of source |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    tasks = list(dict.fromkeys(r["task"] for r in records))
    for task in tasks:
        for variant in VARIANTS:
            rows = [r for r in ok if r["task"] == task and r["variant"] == variant]
            if not rows:
                continue
            share = mean([r["params"] / r["source_params"] for r in rows])
            lines.append(
                f"| {task} | {variant} | {len(rows)} | {pm([r['val_accuracy'] for r in rows])} "
                f"| {pm([r['test_accuracy'] for r in rows])} "
                f"| {mean([r['val_fixed'] for r in rows]):.1f} "
                f"| {mean([r['val_broken'] for r in rows]):.1f} "
                f"| {mean([r['test_broken'] for r in rows]):.1f} | {share:.0%} |"
            )
    failed = [r for r in records if r not in ok]
    lines += ["", "Targets (validation accuracy, mean of the seeds above):", ""]
    for task in tasks:

        def acc(variant: str, key: str = "val_accuracy", task: str = task) -> list[float]:
            return [
                r[key] for r in ok if r["task"] == task and r["variant"] == variant and key in r
            ]

        free, flips = acc("free"), acc("flips")
        if free and flips:
            drop = (mean(free) - mean(flips)) * 100
            verdict = "met" if drop <= 1.0 else "NOT met"
            lines.append(
                f"- {task}, `--max-flips {MAX_FLIPS}`: {drop:.1f} points below unconstrained "
                f"({verdict}: within 1 point)."
            )
        slim, distill = acc("slim"), acc("slim-distill")
        parent = acc("slim", "parent_val_accuracy")
        if slim and distill and parent:
            gain = (mean(distill) - mean(slim)) * 100
            parts = []
            for what, full in (
                ("its full-size parent", parent),
                ("the unconstrained search", free),
            ):
                gap = (mean(full) - mean(slim)) * 100 if full else float("nan")
                if not gap > 0:
                    parts.append(f"no gap to {what} ({gap:+.1f})")
                else:
                    verdict = "met" if gain / gap >= 0.5 else "NOT met"
                    parts.append(
                        f"{gain / gap:.0%} of the {gap:.1f}-point gap to {what} ({verdict})"
                    )
            lines.append(
                f"- {task}, `--max-params {MAX_PARAMS}`: slimmed {mean(slim) * 100:.1f}, with "
                f"distillation offered {mean(distill) * 100:.1f} ({gain:+.1f}); parent "
                f"{mean(parent) * 100:.1f}, unconstrained {mean(free) * 100:.1f}: "
                + "; ".join(parts)
                + "."
            )
    if failed:
        lines += ["", f"Failed runs: {[(r['task'], r['variant'], r['seed']) for r in failed]}"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=["demo", "tabular"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-flips"))
    parser.add_argument("--results", type=Path, default=None, help="JSON lines, appended")
    parser.add_argument("--table-only", type=Path, default=None)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    command = "python bench/flips.py " + shlex.join(sys.argv[1:])
    if args.table_only:
        lines = args.table_only.read_text().splitlines()
        meta, records = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
        emit(table(records, meta), args.write)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    results = args.results or args.work / "results.jsonl"
    meta = {
        "command": command,
        "machine": machine(),
        "note": f"{args.trials} trials, --epochs {args.epochs} --patience {args.patience}.",
    }
    results.write_text(json.dumps(meta) + "\n")
    specs = build_tasks(args.tasks, args.work)
    records = []
    for seed in args.seeds:
        for task in args.tasks:
            spec = json.loads(specs[task].read_text())
            for variant in args.variants:
                record = run_one(task, variant, seed, spec, args, args.work)
                records.append(record)
                with results.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                shown = {k: record.get(k) for k in ("val_accuracy", "val_broken", "wall_s", "rc")}
                print(f"{task} {variant} seed {seed}: {shown}", flush=True)
    emit(table(records, meta), args.write)


if __name__ == "__main__":
    main()
