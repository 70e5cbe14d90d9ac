"""One fine-tune: the training loop, evaluation, early stopping, and the torch threads.

Resident data lives on the device as tensors; a batch is an index into them, so the loop does no
more per step than a hand-written one (``bench/overhead.py`` measures that). Streamed data
(``load.streams.Streamed``) comes in the same batches through a ``DataLoader``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from autotune.config import TrialConfig, score_key
from autotune.errors import AutotuneError, TrialFailed
from autotune.load.anatomy import set_training
from autotune.load.streams import STREAM_BATCH, BatchOrder, Streamed
from autotune.load.tasks import Inputs, TaskData
from autotune.trial import augment
from autotune.trial.accel import Accel
from autotune.trial.freeze import frozen_norms
from autotune.trial.losses import make_loss
from autotune.trial.resume import Resume

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
    train_seconds: float = 0.0
    """Time in the training steps (evaluation not counted)."""
    wait_seconds: float = 0.0
    """Of ``train_seconds``, the time spent waiting for streamed batches (0 for resident data):
    their ratio is how loader-bound training was."""


EpochCallback = Callable[[int, float], None]
"""Called after each epoch with (epoch, validation metric); may raise to stop the fit."""


def configure_threads(device: torch.device, threads: int) -> None:
    """Set torch's intra-op threads for CPU work.

    On small models, more threads were many times slower than one on 2-core machines
    (``bench/threads.py``); parallelism comes from worker processes instead. Default: 1.
    """
    if threads < 1:
        raise AutotuneError(f"--threads must be at least 1, got {threads}")
    if device.type == "cpu" and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def in_order(x: Inputs, device: torch.device) -> Iterator[torch.Tensor]:
    """The input batches of a whole split, in order, on ``device`` (streamed inputs read by a
    loader's workers)."""
    if not isinstance(x, Streamed):
        for i in range(0, len(x), EVAL_BATCH):
            yield x[i : i + EVAL_BATCH].to(device)
        return
    stops = range(0, len(x), STREAM_BATCH)
    loader = x.loader([range(i, min(i + STREAM_BATCH, len(x))) for i in stops], device)
    for inputs in loader:
        yield inputs.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(model: nn.Module, x: Inputs, y: torch.Tensor, accel: Accel = Accel()) -> Evaluation:
    """Accuracy and mean cross-entropy of ``model`` on (x, y), in eval mode."""
    was_training = model.training
    set_training(model, False)
    correct = torch.zeros((), device=y.device)
    loss_sum = torch.zeros((), device=y.device)
    start = 0
    for inputs in in_order(x, y.device):
        target = y[start : start + len(inputs)]
        start += len(inputs)
        with accel.autocast(y.device):
            logits = model(accel.inputs(inputs))
        correct += (logits.argmax(1) == target).sum()
        loss_sum += nn.functional.cross_entropy(logits.float(), target, reduction="sum")
    set_training(model, was_training)
    n = len(x)
    return Evaluation(correct.item() / n, loss_sum.item() / n)


FIT_STATE = ("best", "best_epoch", "best_state", "last_gain")
"""What of the loop an in-trial checkpoint keeps besides the epoch, key, history and times."""

AVERAGES = ("none", "ema")
"""``TrialConfig.average``: the trained weights, or their exponential moving average."""


def averaged(model: nn.Module, steps_per_epoch: int) -> AveragedModel:
    """A copy of ``model`` that follows the exponential moving average of its weights (and
    buffers: BatchNorm's running statistics), with a time constant of one epoch.

    Why: on a small training set the weights at the end of any one epoch are noisy, and so is
    the validation score that picks the epoch. The average is steadier, and on the benchmark
    tasks it generalised better (BENCHMARKS.md "Weights averaged, measured again on the fixed
    pruning").
    """
    decay = 1.0 - 1.0 / max(2, steps_per_epoch)
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def make_optimizer(model: nn.Module, config: TrialConfig) -> torch.optim.Optimizer:
    """AdamW or SGD on the trainable parameters; weight decay only on matrices and kernels."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise TrialFailed("no parameter is trainable: unfreeze at least one layer")
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    # The fused kernels update every tensor in one pass, with the same arithmetic: a resnet18
    # epoch with AdamW on the CPU takes 0.67x the default per-tensor loop's time with them
    # (bench/optimizer_step.py). Other devices keep the loop.
    fused = True if fusable(trainable) else None
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, fused=fused)
    return torch.optim.AdamW(groups, lr=config.lr, fused=fused)


def fusable(params: list[nn.Parameter]) -> bool:
    """Whether PyTorch has fused optimizer kernels for these parameters (floating point, on
    the CPU or a CUDA device)."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)


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
    accel: Accel = Accel(),
    teacher: torch.Tensor | None = None,
    resume: Resume | None = None,
) -> FitResult:
    """Train ``model`` in place on ``data`` (already on the model's device).

    Evaluates the validation metric after every epoch, keeps the best weights (by
    ``config.score_key``: on equal accuracy, the lower loss; the last ones when not
    ``restore_best``), stops after ``patience`` epochs without improving the metric, and hands
    every epoch's metric to ``on_epoch`` (the study reports it to Optuna there, and may stop
    the trial by raising). ``accel``: mixed precision and memory format (``trial.accel``);
    its default is the plain float32 loop. ``teacher``: a teacher's logits on the training
    samples, row for row, for the distillation losses. ``resume``: the trial's in-trial
    checkpoint (``trial.resume``): continue from it when there is one, and write it as often as
    it asks; every epoch before it is handed to ``on_epoch`` again first.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)  # dropout masks
    shuffle = torch.Generator().manual_seed(seed)
    loss_fn = make_loss(config)
    optimizer = make_optimizer(model, config)
    accel.model(model)
    scaler = accel.scaler(data.y_train.device)
    frozen = frozen_norms(model)
    x, y, n = data.x_train, data.y_train, len(data.x_train)
    # A last batch of one sample breaks BatchNorm in training mode: fold it into the previous.
    stops = [i for i in range(0, n, config.batch_size) if n - i > 1 or i == 0]
    feed = Feed(x, stops, n)
    # Its own generator: the shuffling stays the same with augmentation or without.
    crops = torch.Generator().manual_seed(seed) if config.augment == "light" else None

    # What is evaluated and kept: the trained model, or the running average of its weights.
    kept = averaged(model, len(stops)) if config.average == "ema" else None
    judged = model if kept is None else kept.module
    best, best_key, best_epoch, best_state = math.nan, (-math.inf, -math.inf), 0, None
    last_gain = 0  # the last epoch that improved the metric itself: patience counts from it
    history: list[dict[str, float]] = []
    stop_reason = "max_epochs"
    generators = (shuffle, crops)
    loop = (
        None
        if resume is None
        else resume.restore(model, optimizer, scaler, kept, generators, y.device)
    )
    if loop is not None:
        best, best_epoch, best_state, last_gain = (loop[k] for k in FIT_STATE)
        best_key, history = tuple(loop["best_key"]), loop["history"]
        elapsed, feed.seconds, feed.waited = loop["seconds"]
        start -= elapsed  # the whole trial's time, not this run's alone
        for done, past in enumerate(history, start=1):  # reported again: a new Optuna trial
            if on_epoch is not None:
                on_epoch(done, Evaluation(past["val_accuracy"], past["val_loss"]).metric(metric))
    for epoch in range(1 if loop is None else loop["epoch"] + 1, max_epochs + 1):
        set_training(model, True)
        for m in frozen:
            m.eval()
        order = torch.randperm(n, generator=shuffle).to(y.device)
        loss_sum = torch.zeros((), device=y.device)
        for batch, inputs in feed.epoch(order):
            if crops is not None:
                inputs = augment.light(inputs, crops)
            soft = None if teacher is None else teacher[batch]
            with accel.autocast(y.device):
                loss = loss_fn(model(accel.inputs(inputs)), y[batch], soft)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            loss_sum += loss.detach()
            if kept is not None:
                kept.update_parameters(model)
        train_loss = loss_sum.item() / len(stops)  # one sync per epoch, not per step
        if not math.isfinite(train_loss):
            raise TrialFailed(
                f"training loss became {train_loss} in epoch {epoch}; lower the learning rate "
                f"(lr={config.lr:.3g})"
            )
        scores = evaluate(judged, data.x_val, data.y_val, accel)
        value = scores.metric(metric)
        history.append(
            {"train_loss": train_loss, "val_accuracy": scores.accuracy, "val_loss": scores.loss}
        )
        key = score_key(metric, scores.accuracy, scores.loss)
        if best_state is None or key[0] > best_key[0]:
            last_gain = epoch
        if best_state is None or key > best_key:
            best, best_key, best_epoch = value, key, epoch
            # A copy on the device: no host round trip, and CUDA queues it without a sync.
            best_state = {k: v.detach().clone() for k, v in judged.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, value)
        if epoch - last_gain >= patience:
            stop_reason = "patience"
            break
        if resume is not None and epoch < max_epochs and resume.due():
            seconds = [time.perf_counter() - start, feed.seconds, feed.waited]
            state = dict(zip(FIT_STATE, (best, best_epoch, best_state, last_gain), strict=True))
            state |= {"epoch": epoch, "best_key": list(best_key), "history": history}
            resume.save(model, optimizer, scaler, kept, generators, state | {"seconds": seconds})
    assert best_state is not None  # max_epochs >= 1 is checked by the caller
    if restore_best:
        model.load_state_dict(best_state)
    elif kept is not None:
        model.load_state_dict(kept.module.state_dict())
    set_training(model, False)
    return FitResult(
        best, best_epoch, len(history), stop_reason, time.perf_counter() - start, history,
        feed.seconds, feed.waited,
    )  # fmt: skip


class Feed:
    """The training batches of each epoch: ``x[batch]`` of resident inputs, or the same batches
    read by a ``DataLoader`` whose workers stay up from one epoch to the next."""

    def __init__(self, x: Inputs, stops: list[int], n: int) -> None:
        self.x, self.stops, self.ends = x, stops, [*stops[1:], n]
        self.order = BatchOrder()
        self.loader: DataLoader | None = None
        self.seconds = self.waited = 0.0

    def epoch(self, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(indices, inputs) of each batch, in ``order``."""
        started = time.perf_counter()
        x = self.x
        if not isinstance(x, Streamed):
            for i, end in zip(self.stops, self.ends, strict=True):
                batch = order[i:end]
                yield batch, x[batch]
            self.seconds += time.perf_counter() - started
            return
        positions = order.tolist()
        self.order.batches = [
            positions[i:end] for i, end in zip(self.stops, self.ends, strict=True)
        ]
        if self.loader is None:
            self.loader = x.loader(self.order, order.device)
        batches = iter(self.loader)
        for i, end in zip(self.stops, self.ends, strict=True):
            asked = time.perf_counter()
            inputs = next(batches)
            self.waited += time.perf_counter() - asked
            yield order[i:end], inputs.to(order.device, non_blocking=True)
        self.seconds += time.perf_counter() - started
