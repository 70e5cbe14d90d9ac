"""Real ``autotune search`` processes on a tiny saved model, for the crash and workers tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import torch
from conftest import blobs

from autotune.search.study import load_study

TINY_NET = """
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.out = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.out(self.body(x))
"""
# Enough samples and epochs that a trial lasts about a second: long enough that a signal sent
# on seeing a trial run lands in that trial, also on a busy machine (at 6 epochs a trial took
# 0.3 s, and a Ctrl-C once arrived after it had finished).
SPACE = """
lr: {low: 0.001, high: 0.03, log: true}
batch_size: [16, 32]
prune: {low: 0.0, high: 0.5}
analysis: {samples: 16, background: 4, nsamples: 2}
fit: {max_epochs: 20, patience: 20}
"""


def make_job(folder: Path) -> tuple[list[str], dict[str, str]]:
    """Files of a tiny job in ``folder``: the ``search`` arguments and the environment."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tinynet.py").write_text(TINY_NET)
    sys.path.insert(0, str(folder))
    try:
        from tinynet import TinyNet  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(folder))
    torch.manual_seed(0)
    torch.save(TinyNet().state_dict(), folder / "model.pt")
    x, y = blobs(1000, seed=1)
    torch.save({"x_train": x[:800], "y_train": y[:800], "x_val": x[800:], "y_val": y[800:]},
               folder / "data.pt")  # fmt: skip
    (folder / "space.yaml").write_text(SPACE)
    args = ["--model", str(folder / "model.pt"), "--arch", "tinynet:TinyNet"]
    args += ["--data", str(folder / "data.pt"), "--space", str(folder / "space.yaml")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), *sys.path])}
    return [*args, "--pruner", "none"], env


def command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "autotune.cli", "search", *args]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen(command(args), env=env, stdout=f, stderr=subprocess.STDOUT)


def study_in(out: Path, name: str = "model") -> optuna.Study:
    return load_study(None, out, name)


def wait_for(
    check: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, seconds: float = 120
) -> None:
    """Poll ``check`` until it holds; fail if the process ends or time runs out first."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if check():
                return
        except Exception:
            pass  # the study is not there yet
        if process.poll() is not None:
            raise AssertionError(f"the search ended first:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"timed out:\n{log.read_text()[-3000:]}")
