"""Does ``--max-latency`` deliver? A task searched under a latency budget, re-timed apart.

For each seed, on a task of ``bench/peers.py`` (the demo by default, or its ``resnet18``) or a
real-scale conv net of ``bench/real_tasks.py`` (``resnet18-32px``, ``mobilenet_v3_small-32px``):
``autotune search --max-latency X`` (the default search otherwise), then, at the size that
search exported, ``--max-params`` of the same share: what a parameter budget gives at that
size. Then one fresh process loads the source model and both exported ``model.pt`` files and
times them against the source, interleaved (``trial.cost.measure``, 2 s each, batches of 32,
one thread). Reports the re-measured ratios with their spread and the held-out test
accuracies, mean and spread over the seeds.

Run: python bench/latency_budget.py [--task demo] [--budget 0.5x] [--seeds 0 1 2]
         [--trials 30] [--workdir DIR] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import peers
import real_tasks
import yaml
from _shared import emit

REAL_SCALE = {f"{arch}-32px": arch for arch in ("resnet18", "mobilenet_v3_small")}
"""The real-scale conv nets, by task name."""

RETIME = """
import json, sys, torch
import autotune
from autotune.trial.cost import measure
torch.set_num_threads(1)
spec = json.loads(sys.argv[2])
source = autotune.load_model(
    spec["model"], arch=spec.get("arch"), num_classes=spec.get("num_classes")
).module.eval()
x = autotune.load_data(spec["data"]).x_val
out = {}
for name, path in json.loads(sys.argv[1]).items():
    model = torch.load(path, weights_only=False).eval()  # made by this benchmark
    cost = measure(model, x, source=(source, x), budget_s=2.0)
    out[name] = [cost.latency_ratio, cost.ratio_spread]
print(json.dumps(out))
"""


def search(
    spec: dict[str, Any], out: Path, seed: int, trials: int, budget: list[str]
) -> dict[str, Any] | None:
    """One search; its exported config, or None when nothing was within the budget."""
    command = peers.search_command(spec, out, trials, seed)
    done = subprocess.run([*command, *budget], capture_output=True, text=True)
    config = out / "best" / "config.yaml"
    if done.returncode != 0 or not config.is_file():
        print(f"  {' '.join(budget)} seed {seed}: exit {done.returncode}, nothing exported")
        return None
    return yaml.safe_load(config.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("demo", "resnet18", *REAL_SCALE), default="demo")
    parser.add_argument("--budget", default="0.5x")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    if args.task in REAL_SCALE:
        spec = real_tasks.build(REAL_SCALE[args.task], work, seed=peers.TASK_SEED)
    else:
        spec = json.loads(peers.build_tasks([args.task], work)[args.task].read_text())
    rows, results = [], {"latency": [], "params": []}
    for seed in args.seeds:
        by_latency = search(
            spec, work / f"latency-s{seed}", seed, args.trials, ["--max-latency", args.budget]
        )
        if by_latency is None:
            rows.append(f"| {seed} | nothing within {args.budget} | | | | |")
            continue
        share = (
            by_latency["structure"]["params"]["model"] / by_latency["structure"]["params"]["source"]
        )
        by_params = search(
            spec, work / f"params-s{seed}", seed, args.trials, ["--max-params", f"{share:.4f}"]
        )
        models = {"latency": str(work / f"latency-s{seed}" / "best" / "model.pt")}
        if by_params is not None:
            models["params"] = str(work / f"params-s{seed}" / "best" / "model.pt")
        done = subprocess.run(
            [sys.executable, "-c", RETIME, json.dumps(models), json.dumps(spec)],
            capture_output=True,
            text=True,
            check=True,
        )
        timed = json.loads(done.stdout.splitlines()[-1])
        cells = []
        for name, config in (("latency", by_latency), ("params", by_params)):
            if config is None:
                cells += ["none exported", ""]
                continue
            ratio, spread = timed[name]
            accuracy = config["metrics"]["test_accuracy"]
            results[name].append((ratio, accuracy))
            cells += [f"{ratio:.2f}x ± {spread:.2f}", f"{accuracy:.4f}"]
        rows.append(f"| {seed} | {share:.0%} | " + " | ".join(cells) + " |")

    def mean_sd(values: list[float]) -> str:
        if not values:
            return ""
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {sd:.3f}"

    lines = [
        f"### A latency budget on {args.task}: `--max-latency {args.budget}` against "
        "`--max-params`",
        "",
        f"Command: `python bench/latency_budget.py --task {args.task} --budget {args.budget} "
        f"--seeds {' '.join(map(str, args.seeds))} --trials {args.trials}`  ",
        f"Each seed: the default {args.task} search under the latency budget, then under a "
        "parameter budget of the share it exported; both exports re-timed in one fresh process "
        "against the source (interleaved, 2 s each, batch 32, one CPU thread).",
        "",
        "| seed | params exported | `--max-latency` export: latency re-timed | its test acc | "
        "`--max-params` export: latency re-timed | its test acc |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ]
    for name in ("latency", "params"):
        got = results[name]
        if got:
            within = sum(r <= float(args.budget.rstrip("x")) for r, _ in got)
            lines.append(
                f"\n`--max-{name}`: re-timed ratio {mean_sd([r for r, _ in got])}, test accuracy "
                f"{mean_sd([a for _, a in got])}; {within} of {len(got)} within {args.budget}."
            )
    emit(lines, args.write)


if __name__ == "__main__":
    main()
