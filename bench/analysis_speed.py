"""The shap analysis, batched: autotune's expected gradients against shap's own GradientExplainer
loop (one sample at a time), side by side in one process, on resnet18 with every layer gated.

Run: python bench/analysis_speed.py [--samples 128] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torchvision
from _shared import emit

from autotune.rank.expected_gradients import expected_gradients
from autotune.rank.gates import Gated, sites
from autotune.rank.methods import _coalitions


def shap_loop(gated: Gated, x, y, coalitions, nsamples: int, seed: int) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """What autotune ran before: shap.GradientExplainer, one sample per call."""
    import shap

    gated.bind(x[:1], y[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer = shap.GradientExplainer(gated, coalitions, batch_size=nsamples)
        everything = [torch.ones(1, c.shape[1]) for c in coalitions]
        rows: list[list[np.ndarray]] = [[] for _ in coalitions]
        for j in range(len(x)):
            gated.bind(x[j : j + 1], y[j : j + 1])
            values = explainer.shap_values(everything, nsamples=nsamples, rseed=seed + j)
            for i, v in enumerate(values):
                rows[i].append(np.asarray(v).reshape(-1))
    return [np.stack(r) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--background", type=int, default=32)
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(args.samples, 3, 32, 32)
    y = torch.randint(0, 10, (args.samples,))
    gated = Gated(model, sites(model, x), features=False)
    gated.bind(x[:1], y[:1])
    coalitions = _coalitions(gated.gate_sizes(), args.background, (0.0, 1.0), seed=0)
    start = time.perf_counter()
    theirs = shap_loop(gated, x, y, coalitions, args.nsamples, 0)
    t_shap = time.perf_counter() - start
    start = time.perf_counter()
    ours = expected_gradients(gated, x, y, coalitions, args.nsamples, 0)
    t_ours = time.perf_counter() - start
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))
    same = all(
        (
            np.argsort(np.abs(a).mean(0), kind="stable")
            == np.argsort(np.abs(b).mean(0), kind="stable")
        ).all()
        for a, b in zip(ours, theirs, strict=True)
    )
    emit(
        [
            f"### The shap analysis, batched ({date.today()})",
            "",
            f"Command: `python bench/analysis_speed.py --samples {args.samples}`  ",
            f"Machine: {platform.machine()}, 1 torch thread, torch {torch.__version__}, CPU. "
            f"resnet18 (random weights), {len(gated.sites)} gated layers, {args.samples} samples "
            f"3x32x32, {args.background} background coalitions, {args.nsamples} points each; the "
            "same process, one after the other.",
            "",
            "| engine | seconds | speed-up | max abs difference | same channel rankings |",
            "| --- | ---: | ---: | ---: | --- |",
            f"| shap.GradientExplainer, one sample per call | {t_shap:.1f} | 1.0x | | |",
            f"| autotune's batched expected gradients | {t_ours:.1f} | {t_shap / t_ours:.1f}x "
            f"| {diff:.1e} | {same} |",
        ],
        args.write,
    )


if __name__ == "__main__":
    main()
