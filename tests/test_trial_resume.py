"""In-trial checkpoints (``trial/resume.py``): a fit stopped after epoch k continues at k+1 and
ends where the uninterrupted fit ends, bit for bit (CPU, one thread)."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest
import torch
from conftest import blobs
from torch import nn

from autotune.config import TrialConfig
from autotune.load.tasks import TaskData, from_tensors
from autotune.trial.fit import FitResult, fine_tune
from autotune.trial.resume import Resume

EPOCHS = 6


class Stop(Exception):
    """What a SIGTERM does to a fit, from the inside: an exception out of ``on_epoch``."""


class DropNet(nn.Module):
    """An MLP with dropout (the global generator's draws) and a BatchNorm (its buffers)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3))
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class ConvNet(nn.Module):
    """A tiny conv net on 3x8x8 images, for the augmentation's own generator."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.out = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(x).mean((2, 3)))


def _images() -> TaskData:
    x, y = blobs(120)
    pattern = torch.Generator().manual_seed(2)
    images = x[:, :3, None, None] + 0.5 * torch.randn(120, 3, 8, 8, generator=pattern)
    return from_tensors(images, y)


CASES = {
    "adamw-ema-dropout": (DropNet, TrialConfig(lr=1e-2, average="ema", batch_size=16)),
    "sgd-label-smoothing": (
        DropNet,
        TrialConfig(lr=5e-2, optimizer="sgd", loss="label_smoothing", weight_decay=1e-3),
    ),
    "adamw-augmented-images": (ConvNet, TrialConfig(lr=1e-2, augment="light", average="ema")),
}


def _hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _fit(
    model: nn.Module,
    data: TaskData,
    config: TrialConfig,
    reported: list[tuple[int, float]],
    resume: Resume | None = None,
    stop_at: int | None = None,
) -> FitResult:
    def on_epoch(epoch: int, value: float) -> None:
        if epoch == stop_at:
            raise Stop
        reported.append((epoch, value))

    return fine_tune(
        model, data, config, max_epochs=EPOCHS, patience=EPOCHS, seed=3, on_epoch=on_epoch,
        resume=resume,
    )  # fmt: skip


@pytest.mark.parametrize("k", [2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_fit_stopped_after_epoch_k_resumes_at_k_plus_1_with_the_same_weights_and_value(
    case: str, k: int, tmp_path: Path
) -> None:
    make, config = CASES[case]
    data = _images() if make is ConvNet else from_tensors(*blobs())
    torch.manual_seed(0)
    source = make()
    whole, reported_whole = copy.deepcopy(source), []
    expected = _fit(whole, data, config, reported_whole)

    path, identity = tmp_path / "resume.pt", {"config": config.__dict__}
    # Stopped in epoch k + 1: the last checkpoint is the one written after epoch k.
    with pytest.raises(Stop):
        _fit(copy.deepcopy(source), data, config, [], Resume(path, 0.0, identity), stop_at=k + 1)
    assert path.is_file()

    # The rerun builds the trial's model again from the source, and continues from the file.
    resumed, reported = copy.deepcopy(source), []
    resume = Resume(path, 0.0, identity)
    result = _fit(resumed, data, config, reported, resume)
    assert resume.resumed_after == k
    assert reported == reported_whole  # epochs 1..k told again, then k+1.. as they came
    assert result.history == expected.history
    assert (result.best, result.best_epoch, result.epochs_run, result.stop_reason) == (
        expected.best, expected.best_epoch, expected.epochs_run, expected.stop_reason,
    )  # fmt: skip
    assert _hash(resumed) == _hash(whole)


def test_a_file_written_for_another_configuration_is_not_resumed(tmp_path: Path) -> None:
    data, config = from_tensors(*blobs()), TrialConfig(lr=1e-2)
    torch.manual_seed(0)
    source = DropNet()
    path = tmp_path / "resume.pt"
    with pytest.raises(Stop):
        _fit(copy.deepcopy(source), data, config, [], Resume(path, 0.0, {"lr": 1e-2}), stop_at=3)
    other = Resume(path, 0.0, {"lr": 2e-2})
    reported: list[tuple[int, float]] = []
    _fit(copy.deepcopy(source), data, config, reported, other)
    assert other.resumed_after == 0 and [e for e, _ in reported] == list(range(1, EPOCHS + 1))


def test_a_checkpoint_is_written_once_the_interval_has_passed_and_never_in_a_shorter_fit(
    tmp_path: Path,
) -> None:
    """A fake clock: 10 s pass per reading, and a checkpoint is due every 15 s."""
    ticks = iter(range(0, 10_000, 10))
    resume = Resume(tmp_path / "resume.pt", 15.0, {}, clock=lambda: float(next(ticks)))
    epochs: list[int] = []
    save = resume.save
    resume.save = lambda *a: (epochs.append(a[-1]["epoch"]), save(*a))[1]  # type: ignore[method-assign]
    _fit(DropNet(), from_tensors(*blobs()), TrialConfig(), [], resume)
    # Read at the start (0), after epoch 1 (10), 2 (20: due; the save reads 30), 3 (40), 4 (50:
    # due), 5 (70); after the last epoch nothing is left to resume.
    assert epochs == [2, 4]

    never = Resume(tmp_path / "never.pt", 1e9, {})
    _fit(DropNet(), from_tensors(*blobs()), TrialConfig(), [], never)
    assert not never.path.exists()
