"""One fine-tune: the training loop, evaluation, early stopping, and the device and threads.

The data lives on the device as tensors; a batch is an index into them, so the loop does no
more per step than a hand-written one (``bench/overhead.py`` measures that).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from autotune.config import TrialConfig, better
from autotune.errors import AutotuneError, TrialFailed
from autotune.load.anatomy import set_training
from autotune.load.tasks import TaskData
from autotune.trial.freeze import frozen_norms
from autotune.trial.losses import make_loss

EVAL_BATCH = 1024


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float
    """Mean cross-entropy, whatever loss the trial trains with, so trials compare."""

    def metric(self, name: str) -> float:
        return self.accuracy if name == "accuracy" else self.loss


@dataclass
class FitResult:
    """What one fine-tune achieved. The model holds its best weights afterwards."""

    best: float
    """Best validation metric over the epochs."""
    best_epoch: int
    epochs_run: int
    stop_reason: str
    """``patience``, ``max_epochs`` or ``pruned``."""
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    """One entry per epoch: train_loss, val_accuracy, val_loss."""


EpochCallback = Callable[[int, float], None]
"""Called after each epoch with (epoch, validation metric); may raise to stop the fit."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise AutotuneError(f"--device {name!r} is not a device: use auto, cpu or cuda[:N]") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AutotuneError(
            f"--device {name!r} asks for CUDA, but none is available: use cpu or auto"
        )
    return device


def configure_threads(device: torch.device, threads: int) -> None:
    """Set torch's intra-op threads for CPU work.

    On small models, more threads were many times slower than one on 2-core machines (see
    DESIGN.md); parallelism comes from worker processes instead. Default: 1.
    """
    if threads < 1:
        raise AutotuneError(f"--threads must be at least 1, got {threads}")
    if device.type == "cpu" and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Evaluation:
    """Accuracy and mean cross-entropy of ``model`` on (x, y), in eval mode."""
    was_training = model.training
    set_training(model, False)
    correct = torch.zeros((), device=x.device)
    loss_sum = torch.zeros((), device=x.device)
    for i in range(0, len(x), EVAL_BATCH):
        logits = model(x[i : i + EVAL_BATCH])
        target = y[i : i + EVAL_BATCH]
        correct += (logits.argmax(1) == target).sum()
        loss_sum += nn.functional.cross_entropy(logits.float(), target, reduction="sum")
    set_training(model, was_training)
    n = len(x)
    return Evaluation(correct.item() / n, loss_sum.item() / n)


def make_optimizer(model: nn.Module, config: TrialConfig) -> torch.optim.Optimizer:
    """AdamW or SGD on the trainable parameters; weight decay only on matrices and kernels."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise TrialFailed("no parameter is trainable: unfreeze at least one layer")
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


def fine_tune(
    model: nn.Module,
    data: TaskData,
    config: TrialConfig,
    *,
    max_epochs: int,
    patience: int,
    metric: str = "accuracy",
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
    restore_best: bool = True,
    teacher: torch.Tensor | None = None,
) -> FitResult:
    """Train ``model`` in place on ``data`` (already on the model's device).

    Evaluates the validation metric after every epoch, keeps the best weights (the last ones
    when not ``restore_best``), stops after ``patience`` epochs without improvement, and hands
    every epoch's metric to ``on_epoch`` (the study reports it to Optuna there, and may stop
    the trial by raising). ``teacher``: a teacher's logits on the training samples, row for
    row, for the distillation losses.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)  # dropout masks
    shuffle = torch.Generator().manual_seed(seed)
    loss_fn = make_loss(config)
    optimizer = make_optimizer(model, config)
    frozen = frozen_norms(model)
    x, y, n = data.x_train, data.y_train, len(data.x_train)
    # A last batch of one sample breaks BatchNorm in training mode: fold it into the previous.
    stops = [i for i in range(0, n, config.batch_size) if n - i > 1 or i == 0]

    best, best_epoch, best_state = math.nan, 0, None
    history: list[dict[str, float]] = []
    stop_reason = "max_epochs"
    for epoch in range(1, max_epochs + 1):
        set_training(model, True)
        for m in frozen:
            m.eval()
        order = torch.randperm(n, generator=shuffle).to(x.device)
        loss_sum = torch.zeros((), device=x.device)
        for k, i in enumerate(stops):
            end = stops[k + 1] if k + 1 < len(stops) else n
            batch = order[i:end]
            soft = None if teacher is None else teacher[batch]
            loss = loss_fn(model(x[batch]), y[batch], soft)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
        train_loss = loss_sum.item() / len(stops)  # one sync per epoch, not per step
        if not math.isfinite(train_loss):
            raise TrialFailed(
                f"training loss became {train_loss} in epoch {epoch}; lower the learning rate "
                f"(lr={config.lr:.3g})"
            )
        scores = evaluate(model, data.x_val, data.y_val)
        value = scores.metric(metric)
        history.append(
            {"train_loss": train_loss, "val_accuracy": scores.accuracy, "val_loss": scores.loss}
        )
        if best_state is None or better(metric, value, best):
            best, best_epoch = value, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, value)
        if epoch - best_epoch >= patience:
            stop_reason = "patience"
            break
    assert best_state is not None  # max_epochs >= 1 is checked by the caller
    if restore_best:
        model.load_state_dict(best_state)
    set_training(model, False)
    return FitResult(
        best, best_epoch, len(history), stop_reason, time.perf_counter() - start, history
    )
