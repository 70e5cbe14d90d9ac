"""The demo, slimmed: does a search with pruning find a half-size model as good as the best
unpruned one?

Runs two 30-trial searches on the demo, side by side in one process: the default space (no
pruning) and the ``vision`` space (SHAP-ranked pruning and unfreezing) with ``--max-params 0.5``.
Compares the best model of each: validation and held-out test accuracy, parameters, MACs and
latency.

Run: python bench/pruning_search.py [--trials 30] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import torch
from _shared import emit
from rich.console import Console

from autotune import search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    args = parser.parse_args()
    runs = {
        "default space (no pruning)": {"space": "default"},
        "vision space, --max-params 0.5": {"space": "vision", "max_params": "0.5"},
    }
    rows = []
    bests = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, kwargs in runs.items():
            start = time.perf_counter()
            result = search(
                "demo",
                "demo",
                trials=args.trials,
                out=Path(tmp) / label.split()[0],
                console=Console(file=io.StringIO()),
                **kwargs,
            )
            seconds = time.perf_counter() - start
            best = result.best
            assert best is not None
            m, s = best.config["metrics"], best.config["structure"]
            bests[label] = m["val_accuracy"]
            rows.append(
                f"| {label} | {seconds:.0f} s | {best.trial} | {m['val_accuracy']:.3f} | "
                f"{m['test_accuracy']:.3f} | {s['params']['model']:,} "
                f"({s['params']['model'] / s['params']['source']:.0%}) | "
                f"{s['macs']['model'] / s['macs']['source']:.0%} | "
                f"{s['latency_ms']['model']:.2f} / {s['latency_ms']['source']:.2f} ms |"
            )
    full, slim = bests.values()
    verdict = "met" if slim >= full - 0.01 else "NOT met"
    emit(
        [
            f"### Demo search with pruning ({time.strftime('%Y-%m-%d')})",
            "",
            f"`python bench/pruning_search.py --trials {args.trials}` "
            f"({torch.get_num_threads()} thread, CPU). Best trial of each {args.trials}-trial "
            "study; latency is one forward pass of 32 samples, model / source.",
            "",
            "| search | time | best trial | val acc | test acc | params (of source) | MACs | "
            "latency |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Half-size model within 1 point of the best unpruned one: {verdict} "
            f"(val {slim:.3f} vs {full:.3f}).",
        ],
        args.write,
    )


if __name__ == "__main__":
    main()
