"""Two runs of the peers benchmark, seed by seed: what a change did to one method's exports.

A search on one thread is deterministic per seed, so two results files of ``bench/peers.py``
(or ``bench/real_scale.py``) made before and after a change pair exactly: per task, the mean
test accuracy of each, the mean of the per-seed differences with its standard error, on how
many seeds it rose and fell, the worst seed's difference, how many seeds exported the same
trial at the same size, and the mean share of the source's parameters kept. Walls are not
compared: two runs made apart share the machine with different work.

Run: python bench/paired.py BEFORE.jsonl AFTER.jsonl [--method autotune] [--before-method p2]
     (``--before-method``: set another method of BEFORE, seed by seed, against AFTER's)
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def runs(path: Path, method: str) -> dict[tuple[str, int], dict[str, Any]]:
    """The successful runs of ``method`` in a results file, by (task, seed)."""
    found = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("method") == method and r.get("rc") == 0 and r.get("test_accuracy") is not None:
            found[(r["task"], r["seed"])] = r
    return found


def kept(r: dict[str, Any]) -> float:
    return 100 * r["params"] / r["source_params"]


def compare(before: dict[tuple[str, int], Any], after: dict[tuple[str, int], Any]) -> list[str]:
    lines = [
        "| task | seeds | test % before | after | paired difference | up / down | worst seed "
        "| same export | params % before → after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for task in sorted({t for t, _ in after}):
        seeds = sorted(s for t, s in after if t == task and (t, s) in before)
        if not seeds:
            continue
        a, b = [before[(task, s)] for s in seeds], [after[(task, s)] for s in seeds]
        diffs = [100 * (y["test_accuracy"] - x["test_accuracy"]) for x, y in zip(a, b, strict=True)]
        error = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
        same = sum(
            x.get("best_trial") == y.get("best_trial") and x["params"] == y["params"]
            for x, y in zip(a, b, strict=True)
        )
        lines.append(
            f"| {task} | {len(seeds)} | {100 * statistics.mean(x['test_accuracy'] for x in a):.2f} "
            f"| {100 * statistics.mean(y['test_accuracy'] for y in b):.2f} "
            f"| {statistics.mean(diffs):+.2f} ± {error:.2f} "
            f"| {sum(d > 0 for d in diffs)} / {sum(d < 0 for d in diffs)} | {min(diffs):+.2f} "
            f"| {same} "
            f"| {statistics.mean(map(kept, a)):.0f} → {statistics.mean(map(kept, b)):.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--method", default="autotune", help="the method compared (peers.py's)")
    parser.add_argument("--before-method", help="BEFORE's method, when not --method")
    args = parser.parse_args()
    before = runs(args.before, args.before_method or args.method)
    after = runs(args.after, args.method)
    print("\n".join(compare(before, after)))


if __name__ == "__main__":
    main()
