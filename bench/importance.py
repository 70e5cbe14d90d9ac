"""Which ranking prunes best, and which layers to unfreeze: shap against l1, taylor and random.

Two demo tasks, both on digits the demo CNN never saw in pretraining:
- ``clean``: the held-out digits as they are (the CNN gets ~99%): pruning damage shows directly;
- ``shifted``: the demo target (rotated, blurred; the CNN gets ~33%): the product's use case.

For each task, seed and criterion, the CNN is pruned with the same per-layer ratio (so every
criterion keeps the same number of parameters), then evaluated with no fine-tuning, after a short
fine-tune (3 epochs) and after a full one (20 epochs, patience 5). Accuracy is on the test split,
at the epoch with the best validation accuracy. Then SHAP-ordered vs output-backwards unfreezing
at equal k on the shifted task, and the time each ranking takes, including resnet18 on 32x32.

Run: python bench/importance.py [--seeds 3] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from _shared import emit

from autotune.config import EXPLAINERS, TrialConfig
from autotune.load.anatomy import layers
from autotune.load.data import load_data
from autotune.load.models import load_model
from autotune.load.tasks import TaskData
from autotune.rank.methods import METHODS, score
from autotune.trial.fit import evaluate, fine_tune
from autotune.trial.freeze import configure
from autotune.trial.prune import prune

RATIOS = (0.3, 0.5, 0.7)
FITS = {"none": 0, "short": 3, "full": 20}
SAMPLES = 128


def clean_task() -> TaskData:
    """The demo target's digits without the shift (same split as the demo)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    target = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[900:]
    x, y = x[target], y[target]
    return TaskData(x[:400], y[:400], x[400:600], y[400:600], x[600:], y[600:], spec="clean")


def test_accuracy(model: torch.nn.Module, data: TaskData, epochs: int, seed: int, **kw) -> float:
    if epochs:
        fine_tune(
            model,
            data,
            TrialConfig(lr=3e-3, weight_decay=1e-4, **kw),
            max_epochs=epochs,
            patience=5,
            seed=seed,
        )
    assert data.x_test is not None and data.y_test is not None
    return evaluate(model, data.x_test, data.y_test).accuracy


def explained(data: TaskData, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation samples an analysis explains (as ``analysis.analyze_job`` picks them)."""
    order = torch.randperm(len(data.x_val), generator=torch.Generator().manual_seed(seed))
    chosen = order[:SAMPLES]
    return data.x_val[chosen], data.y_val[chosen]


def pruning_table(model: torch.nn.Module, tasks: dict[str, TaskData], seeds: int) -> list[str]:
    lines = []
    for task, data in tasks.items():
        results: dict[tuple[str, float, str], list[float]] = {}
        params: dict[float, int] = {}
        for seed in range(seeds):
            x, y = explained(data, seed)
            for method in METHODS:
                channels = score(method, model, x, y, seed=seed).channels
                for ratio in RATIOS:
                    for fit, epochs in FITS.items():
                        pruned = copy.deepcopy(model)
                        prune(pruned, channels, x[:2], ratio)
                        params[ratio] = sum(p.numel() for p in pruned.parameters())
                        acc = test_accuracy(pruned, data, epochs, seed)
                        results.setdefault((method, ratio, fit), []).append(acc)
        base = test_accuracy(copy.deepcopy(model), data, 0, 0)
        lines += [
            f"**{task}** task (unpruned CNN, no fine-tuning: test accuracy {base:.3f}; "
            f"{sum(p.numel() for p in model.parameters()):,} parameters)",
            "",
            "| ratio (params kept) | fine-tune | " + " | ".join(METHODS) + " |",
            "|---|---|" + "---|" * len(METHODS),
        ]
        for ratio in RATIOS:
            for fit in FITS:
                cells = []
                means = {m: statistics.mean(results[(m, ratio, fit)]) for m in METHODS}
                best = max(means.values())
                for m in METHODS:
                    runs = results[(m, ratio, fit)]
                    cell = f"{means[m]:.3f} ± {statistics.pstdev(runs):.3f}"
                    cells.append(f"**{cell}**" if means[m] == best else cell)
                kept = params[ratio]
                lines.append(
                    f"| {ratio} ({kept:,}) | {fit} ({FITS[fit]} ep) | " + " | ".join(cells) + " |"
                )
        lines.append("")
    return lines


def unfreeze_table(model: torch.nn.Module, data: TaskData, seeds: int) -> list[str]:
    names = [u.name for u in layers(model)]
    rows: dict[tuple[str, int], list[float]] = {}
    orders = {}
    for seed in range(seeds):
        x, y = explained(data, seed)
        shap_layers = score("shap", model, x, y, seed=seed).layers or {}
        order = sorted(names, key=lambda n: -shap_layers.get(n, 0.0))
        orders[seed] = order
        for k in (1, 2, 3):
            for kind, chosen in (("output", None), ("shap", order)):
                trial = copy.deepcopy(model)
                config = TrialConfig(unfreeze=k)
                configure(trial, config, chosen)
                acc = test_accuracy(trial, data, FITS["full"], seed, unfreeze=k)
                rows.setdefault((kind, k), []).append(acc)
    lines = [
        "**Unfreezing k layers, shifted task** (full fine-tune, test accuracy, "
        f"{seeds} seeds; layers input side first: {', '.join(names)})",
        "",
        "| k | output-backwards | SHAP error order | SHAP's top k (seed 0) |",
        "|---|---|---|---|",
    ]
    for k in (1, 2, 3):
        out, sh = rows[("output", k)], rows[("shap", k)]
        lines.append(
            f"| {k} | {statistics.mean(out):.3f} ± {statistics.pstdev(out):.3f} | "
            f"{statistics.mean(sh):.3f} ± {statistics.pstdev(sh):.3f} | "
            f"{', '.join(orders[0][:k])} |"
        )
    return [*lines, ""]


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _pruned(model: torch.nn.Module, channels, x, ratio: float, global_ranking: bool):  # type: ignore[no-untyped-def]
    pruned = copy.deepcopy(model)
    prune(pruned, channels, x[:2], ratio, global_ranking=global_ranking)
    return pruned


def scope_table(model: torch.nn.Module, data: TaskData, seeds: int) -> list[str]:
    """One ranking across the whole model against the same fraction of every layer, at the
    same parameter count (the global fraction is bisected to match the per-layer one's)."""
    methods = ("shap", "taylor", "l1")
    results: dict[tuple[str, float, str, str], list[float]] = {}
    for seed in range(seeds):
        x, y = explained(data, seed)
        for method in methods:
            channels = score(method, model, x, y, seed=seed).channels
            for ratio in RATIOS[:2]:
                layered = _pruned(model, channels, x, ratio, False)
                target, low, high = _params(layered), 0.0, 0.95
                for _ in range(14):
                    middle = (low + high) / 2
                    if _params(_pruned(model, channels, x, middle, True)) > target:
                        low = middle
                    else:
                        high = middle
                pruned = {"layer": layered, "global": _pruned(model, channels, x, high, True)}
                for scope, net in pruned.items():
                    for fit in ("none", "short"):
                        acc = test_accuracy(copy.deepcopy(net), data, FITS[fit], seed)
                        results.setdefault((method, ratio, scope, fit), []).append(acc)
    lines = [
        f"**Per-layer vs global ranking, clean task** (test accuracy, {seeds} seeds; the global "
        "fraction is bisected to keep at most the per-layer one's parameters)",
        "",
        "| ratio | fine-tune | " + " | ".join(f"{m} layer | {m} global" for m in methods) + " |",
        "|---|---|" + "---|---|" * len(methods),
    ]
    for ratio in RATIOS[:2]:
        for fit in ("none", "short"):
            cells = []
            for m in methods:
                for scope in ("layer", "global"):
                    runs = results[(m, ratio, scope, fit)]
                    cells.append(f"{statistics.mean(runs):.3f} ± {statistics.pstdev(runs):.3f}")
            lines.append(f"| {ratio} | {fit} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def explainer_table(model: torch.nn.Module, data: TaskData, seeds: int) -> list[str]:
    """shap's two explainers on the same gates: pruning without fine-tuning, and time."""
    results: dict[tuple[str, float], list[float]] = {}
    times: dict[str, list[float]] = {}
    for seed in range(seeds):
        x, y = explained(data, seed)
        for explainer in EXPLAINERS:
            start = time.perf_counter()
            channels = score("shap", model, x, y, seed=seed, explainer=explainer).channels
            times.setdefault(explainer, []).append(time.perf_counter() - start)
            for ratio in RATIOS[:2]:
                pruned = copy.deepcopy(model)
                prune(pruned, channels, x[:2], ratio)
                results.setdefault((explainer, ratio), []).append(
                    test_accuracy(pruned, data, 0, seed)
                )
    lines = [
        f"**shap explainers, clean task, no fine-tuning** (test accuracy, {seeds} seeds)",
        "",
        "| explainer | 0.3 pruned | 0.5 pruned | time (128 samples) |",
        "|---|---|---|---|",
    ]
    for explainer in EXPLAINERS:
        cells = [
            f"{statistics.mean(results[(explainer, r)]):.3f} ± "
            f"{statistics.pstdev(results[(explainer, r)]):.3f}"
            for r in RATIOS[:2]
        ]
        lines.append(
            f"| {explainer} | {' | '.join(cells)} | {statistics.mean(times[explainer]):.2f} s |"
        )
    return [*lines, ""]


def timing_table(model: torch.nn.Module, data: TaskData) -> list[str]:
    x, y = explained(data, 0)
    lines = [
        "**Ranking time** (one CPU thread; the demo CNN on 128 samples, resnet18 on 128 random "
        "32x32 inputs, all 21 gated layers)",
        "",
        "| model | " + " | ".join(METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=10).eval()
    rx, ry = torch.randn(SAMPLES, 3, 32, 32), torch.arange(SAMPLES) % 10
    for label, net, inputs, labels in (
        ("demo CNN", model, x, y),
        ("resnet18, 32x32", resnet, rx, ry),
    ):
        cells = []
        for method in METHODS:
            start = time.perf_counter()
            score(method, net, inputs, labels)
            cells.append(f"{time.perf_counter() - start:.2f} s")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    np.random.seed(0)
    model = load_model("demo").module.eval()
    tasks = {"clean": clean_task(), "shifted": load_data("demo")}
    start = time.perf_counter()
    lines = [
        f"### Pruning criteria and unfreezing order ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python bench/importance.py --seeds {args.seeds}` "
        f"({torch.get_num_threads()} thread, CPU). Mean ± std over seeds of test accuracy; "
        "every criterion keeps the same channels per layer, so the same parameter count. "
        "Best per row in bold.",
        "",
    ]
    lines += pruning_table(model, tasks, args.seeds)
    lines += unfreeze_table(model, tasks["shifted"], args.seeds)
    lines += scope_table(model, tasks["clean"], args.seeds)
    lines += explainer_table(model, tasks["clean"], args.seeds)
    lines += timing_table(model, tasks["clean"])
    lines.append(f"(whole run: {time.perf_counter() - start:.0f} s)")
    emit(lines, args.write)


if __name__ == "__main__":
    main()
