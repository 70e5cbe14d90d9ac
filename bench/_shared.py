"""Shared by the benchmarks: one timed demo fine-tune, and Markdown output."""

from __future__ import annotations

import copy
import subprocess
import time
from pathlib import Path

import torch

from autotune.config import TrialConfig
from autotune.load.data import load_data
from autotune.load.models import load_model
from autotune.trial.fit import fine_tune


def time_demo_fit(device: str = "cpu", epochs: int = 20) -> tuple[float, float]:
    """Seconds to fine-tune the demo CNN (AdamW, lr 3e-3, every layer) and its best val accuracy.

    Loading the model and data is not timed.
    """
    model = copy.deepcopy(load_model("demo").module).to(device)
    data = load_data("demo").to(device)
    start = time.perf_counter()
    result = fine_tune(model, data, TrialConfig(lr=3e-3), max_epochs=epochs, patience=epochs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, result.best


def commit_line() -> str:
    """Which code a run measured: the commit checked out, and whether the package differed."""
    root = Path(__file__).parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "autotune", "search_spaces")
    return f"At commit `{head}`" + (" with uncommitted changes to autotune/." if dirty else ".")


def emit(lines: list[str], write: Path | None, commit: bool = True) -> None:
    """Print a Markdown section, and append it to ``write`` when given.

    The commit goes under the heading unless the section already names it: every table in
    BENCHMARKS.md says which code made it. ``commit`` False: the section says it itself (a
    table rebuilt from results files was made by the code of their runs, not of this checkout).
    """
    named = any("At commit `" in line for line in lines)
    if commit and lines and lines[0].startswith("#") and not named:
        rest = lines[2:] if len(lines) > 1 and not lines[1] else lines[1:]
        lines = [lines[0], "", commit_line() + "  ", *rest]
    text = "\n".join(lines).rstrip("\n") + "\n"
    print(text)
    if write is not None:
        with write.open("a") as f:
            f.write(text + "\n")
