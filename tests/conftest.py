from __future__ import annotations

import copy
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from autotune.load.tasks import TaskData, from_tensors
from autotune.rank.gates import Gated, Site

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _hangup_as_a_terminal_gives_it() -> Iterator[None]:
    # A suite started under nohup inherits SIGHUP ignored, which autotune then leaves ignored
    # (``interrupts.stop_on_termination``), as do the searches the tests start: the tests of a
    # closed terminal need it as a terminal gives it.
    was = signal.getsignal(signal.SIGHUP)
    if was is signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGHUP, was)


@pytest.fixture(autouse=True, scope="session")
def _demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # The demo is built once per test session into its own cache, never the user's.
    mp = pytest.MonkeyPatch()
    mp.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


class TinyNet(nn.Module):
    """An 8-feature, 3-class MLP with a BatchNorm: small enough to train in milliseconds."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.out = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


NET_SOURCE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))
"""
"""An 8-feature, 3-class model as a user's file holds it (for ``--code`` and pickled modules)."""


def randomise_norms(model: nn.Module) -> torch.Generator:
    """Non-trivial BatchNorm statistics, so a channel kept with the wrong statistics shows;
    returns the generator, to draw on from where it stopped."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return gen


def gated_log_probs(
    model: nn.Module, found: list[Site], kept: dict[str, list[int]], x: torch.Tensor
) -> torch.Tensor:
    """The original model with every removed unit gated to zero (``kept``: layer -> the units
    kept; a layer it does not name keeps all): what structural pruning must equal."""
    gated = Gated(copy.deepcopy(model), found, features=False)
    gated.bind(x, torch.zeros(len(x), dtype=torch.long))
    gates = []
    for site in found:
        gate = torch.zeros(len(x), site.channels)
        gate[:, kept.get(site.layer, list(range(site.channels)))] = 1
        gates.append(gate)
    with torch.no_grad():
        return gated(*gates).squeeze(1)


def assert_program_matches(program: Path, x: torch.Tensor, y: torch.Tensor) -> None:
    """``program`` (a ``.pt2``) loads in a fresh process, without autotune or the model's code,
    and gives ``y`` on ``x``."""
    io = program.parent / "io.pt"
    torch.save({"x": x, "y": y}, io)
    check = (
        "import sys, torch\n"
        "io = torch.load(sys.argv[2])\n"
        "m = torch.export.load(sys.argv[1]).module()\n"
        "torch.testing.assert_close(m(io['x']), io['y'], atol=1e-5, rtol=1e-5)\n"
        "assert 'autotune' not in sys.modules\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", check, str(program), str(io)],
        capture_output=True, text=True, cwd=program.parent,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]


def blobs(n: int = 240, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three separable Gaussian blobs in 8 dimensions."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centers = torch.randn(3, 8, generator=gen) * 3
    return centers[y] + torch.randn(n, 8, generator=gen), y


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture
def tiny_data() -> TaskData:
    x, y = blobs()
    return from_tensors(x, y)


@pytest.fixture
def tensors_file(tmp_path: Path) -> Path:
    x, y = blobs()
    path = tmp_path / "data.pt"
    torch.save(
        {
            "x_train": x[:160],
            "y_train": y[:160],
            "x_val": x[160:200],
            "y_val": y[160:200],
            "x_test": x[200:],
            "y_test": y[200:],
        },
        path,
    )
    return path


@pytest.fixture(scope="session")
def slimmed_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of a short search that prunes: study, analysis, report, artifacts."""
    import io

    from rich.console import Console

    from autotune import search

    out = tmp_path_factory.mktemp("slimmed")
    x, y = blobs(300)
    data = from_tensors(
        x[:200], y[:200], x_val=x[200:260], y_val=y[200:260], x_test=x[260:], y_test=y[260:]
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    space = {
        "lr": {"low": 1e-3, "high": 3e-2, "log": True},
        "prune": {"low": 0.0, "high": 0.7},
        "fit": {"max_epochs": 4, "patience": 4},
        "analysis": {"samples": 32, "background": 8, "nsamples": 4},
    }
    search(model, data, space=space, trials=6, out=out, console=Console(file=io.StringIO()))
    return out


def write_cli_job(folder: Path, tensors_file: Path, space: str) -> list[str]:
    """A model (a state_dict and its class in ``net.py``), data and a search space written
    into ``folder``; the ``autotune search`` options that name them, relative to it."""
    (folder / "net.py").write_text(NET_SOURCE)
    torch.manual_seed(0)
    body, head = nn.Linear(8, 16), nn.Linear(16, 3)
    state = {f"body.0.{k}": v for k, v in body.state_dict().items()}
    torch.save(state | {f"out.{k}": v for k, v in head.state_dict().items()}, folder / "net.pt")
    (folder / "data.pt").write_bytes(tensors_file.read_bytes())
    (folder / "space.yaml").write_text(space)
    model = ["--model", "net.pt", "--arch", "net.py:Net", "--data", "data.pt"]
    return [*model, "--space", "space.yaml"]
