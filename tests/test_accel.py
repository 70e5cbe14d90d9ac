"""The GPU switches (mixed precision, channels-last, memory release, the out-of-memory retry),
checked on the CPU: off by default there and bit-identical to the plain loop, each one usable
on its own, and refused with the fix when it cannot apply."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from conftest import TinyNet, blobs
from optuna.trial import TrialState
from rich.console import Console
from torch import nn

from autotune import search
from autotune.config import SearchSettings, TrialConfig
from autotune.errors import AutotuneError
from autotune.load.tasks import TaskData, from_tensors
from autotune.trial.accel import Accel, plan
from autotune.trial.fit import fine_tune

CPU = torch.device("cpu")


def _conv() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3),
    )  # fmt: skip


def _images() -> TaskData:
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(90) % 3
    x = torch.randn(90, 1, 8, 8, generator=gen) + y.view(-1, 1, 1, 1).float()
    return from_tensors(x[:60], y[:60], x_val=x[60:], y_val=y[60:])


def test_on_the_cpu_auto_is_the_plain_float32_loop() -> None:
    assert plan(CPU, _conv()) == Accel()
    assert Accel().describe() == "fp32"
    data = _images()
    a, b = _conv(), _conv()
    fine_tune(a, data, TrialConfig(lr=1e-2), max_epochs=3, patience=3)
    fine_tune(b, data, TrialConfig(lr=1e-2), max_epochs=3, patience=3, accel=plan(CPU, b))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_bf16_autocast_trains_and_says_so() -> None:
    accel = plan(CPU, _conv(), amp="bf16")
    assert accel.dtype == torch.bfloat16 and accel.describe() == "bf16 autocast"
    model = _conv()
    result = fine_tune(
        model, _images(), TrialConfig(lr=1e-2), max_epochs=4, patience=4, accel=accel
    )
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_channels_last_changes_the_layout_not_the_function() -> None:
    accel = plan(CPU, _conv(), channels_last="on")
    assert accel.channels_last and accel.describe() == "fp32, channels-last"
    assert not plan(CPU, TinyNet(), channels_last="on").channels_last  # no conv: nothing to do
    data = _images()
    plain, nhwc = _conv().eval(), accel.model(_conv().eval())
    assert nhwc[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(plain(data.x_val), nhwc(accel.inputs(data.x_val)), atol=1e-5)
    result = fine_tune(nhwc, data, TrialConfig(lr=1e-2), max_epochs=3, patience=3, accel=accel)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_switches_that_cannot_apply_are_refused_with_the_fix() -> None:
    with pytest.raises(AutotuneError, match="--amp fp16 needs a CUDA device"):
        plan(CPU, _conv(), amp="fp16")
    with pytest.raises(AutotuneError, match=r"--amp must be one of .*'fast'"):
        SearchSettings(amp="fast").resolved({})
    with pytest.raises(AutotuneError, match="--channels-last must be one of"):
        SearchSettings(channels_last="yes").resolved({})


class RunsOutAbove(nn.Module):
    """TinyNet that raises CUDA's out-of-memory error on training batches above ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.net, self.limit = TinyNet(), limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (batch of {len(x)})")
        return self.net(x)


def _search_at_batch(batch_size: int, out: Path) -> list:
    x, y = blobs(200)
    data = from_tensors(x[:140], y[:140], x_val=x[140:], y_val=y[140:])
    torch.manual_seed(0)
    space = {"lr": 1e-2, "batch_size": batch_size, "fit": {"max_epochs": 2, "patience": 2}}
    result = search(
        RunsOutAbove(limit=40).eval(), data, space=space, trials=1, out=out,
        console=Console(file=io.StringIO()), pruner="none",
    )  # fmt: skip
    return [t for t in result.study.trials if not t.user_attrs.get("baseline")]


def test_a_trial_out_of_memory_retries_once_at_half_the_batch(tmp_path: Path) -> None:
    (trial,) = _search_at_batch(64, tmp_path / "fits")
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["oom"] == "out of GPU memory at batch size 64: retried at 32"
    assert trial.user_attrs["config"]["batch_size"] == 32  # what the exported model used
    (trial,) = _search_at_batch(128, tmp_path / "too_big")
    assert trial.state == TrialState.FAIL
    assert "out of GPU memory at batch size 64 too" in trial.user_attrs["fail_reason"]


def test_devices_place_one_worker_per_card() -> None:
    settings = SearchSettings(devices="0,1").resolved({})
    assert (settings.device, settings.workers) == ("cuda:0", 2)
    third = SearchSettings(devices="0,1", workers=4, worker=3).resolved({})
    assert (third.device, third.workers) == ("cuda:1", 4)  # round robin beyond the cards
    with pytest.raises(AutotuneError, match="--devices 'gpu0' is not a list of CUDA device"):
        SearchSettings(devices="gpu0").resolved({})
