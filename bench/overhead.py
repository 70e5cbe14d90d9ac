"""Overhead of autotune's training loop against a bare hand-written PyTorch loop.

Both train the demo CNN on the demo's target domain with one fixed configuration (AdamW,
lr 3e-3, batch 32, every layer trained, 20 epochs, validation after each epoch) with the same
torch threads, interleaved, several times; the ratio of medians is what matters. Three autotune
timings are taken: ``fine_tune`` alone (the per-trial loop), the same with ``average: ema`` (the
moving average of the weights scored and kept, as the shipped spaces train), and a whole
``autotune.search()`` with one trial, which adds the once-per-study costs: creating the SQLite
study, the baseline evaluation, the model copy, Optuna reporting, and exporting the best model
(torch.export).

Run: python bench/overhead.py [--repeats 7] [--threads 1] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _shared import emit
from rich.console import Console

from autotune import search
from autotune.config import TrialConfig
from autotune.load.data import load_data
from autotune.load.models import load_model
from autotune.trial.fit import fine_tune

EPOCHS, LR, BATCH = 20, 3e-3, 32
CONFIG = TrialConfig(lr=LR, batch_size=BATCH, optimizer="adamw", weight_decay=0.0)
AVERAGED = dataclasses.replace(CONFIG, average="ema")
SPACE = {
    "lr": LR,
    "batch_size": BATCH,
    "optimizer": "adamw",
    "weight_decay": 0.0,
    "fit": {"max_epochs": EPOCHS, "patience": EPOCHS},
}


def hand_written(model: torch.nn.Module, data: object) -> float:
    """What a user would write: shuffle, batches, step; evaluate every epoch."""
    x, y, xv, yv = data.x_train, data.y_train, data.x_val, data.y_val  # type: ignore[attr-defined]
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    best = 0.0
    for _ in range(EPOCHS):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), BATCH):
            batch = order[i : i + BATCH]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            best = max(best, (model(xv).argmax(1) == yv).float().mean().item())
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", type=Path, help="append the result to this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = load_model("demo").module
    data = load_data("demo")

    times: dict[str, list[float]] = {
        "hand-written loop": [],
        "autotune fine_tune": [],
        "autotune fine_tune, average: ema": [],
        "autotune.search(), 1 trial": [],
    }
    accuracy: dict[str, float] = {}
    for _ in range(args.repeats):  # interleaved, so machine noise hits all three alike
        model = copy.deepcopy(source)
        start = time.perf_counter()
        accuracy["hand-written loop"] = hand_written(model, data)
        times["hand-written loop"].append(time.perf_counter() - start)

        model = copy.deepcopy(source)
        start = time.perf_counter()
        result = fine_tune(model, data, CONFIG, max_epochs=EPOCHS, patience=EPOCHS)
        times["autotune fine_tune"].append(time.perf_counter() - start)
        accuracy["autotune fine_tune"] = result.best

        model = copy.deepcopy(source)
        start = time.perf_counter()
        result = fine_tune(model, data, AVERAGED, max_epochs=EPOCHS, patience=EPOCHS)
        times["autotune fine_tune, average: ema"].append(time.perf_counter() - start)
        accuracy["autotune fine_tune, average: ema"] = result.best

        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            study = search(
                source,
                data,
                space=SPACE,
                trials=1,
                out=out,
                threads=args.threads,
                console=Console(file=io.StringIO()),
            ).study
            times["autotune.search(), 1 trial"].append(time.perf_counter() - start)
            accuracy["autotune.search(), 1 trial"] = study.trials[1].value or 0.0

    base = statistics.median(times["hand-written loop"])
    lines = [
        f"### Training-loop overhead ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `python bench/overhead.py --repeats {args.repeats} --threads {args.threads}`  ",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch "
        f"{torch.__version__}, CPU. Demo CNN, {EPOCHS} epochs, batch {BATCH}, "
        f"{len(data.x_train)} training samples; medians of {args.repeats} interleaved runs.",
        "",
        "| run | median s | min s | ratio to hand-written | best val accuracy |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(
            f"| {name} | {median:.3f} | {min(values):.3f} | {median / base:.3f} | "
            f"{accuracy[name]:.4f} |"
        )
    emit(lines, args.write)


if __name__ == "__main__":
    main()
