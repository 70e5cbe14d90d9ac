"""Build and fine-tune one trial's model: what the search's objective and ``export`` share."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from autotune.config import TrialConfig
from autotune.load.streams import inputs_join
from autotune.load.tasks import TaskData
from autotune.rank.analysis import Analysis
from autotune.trial.accel import Accel, plan
from autotune.trial.build import Changes, build
from autotune.trial.checkpoints import Checkpoints, UnreadableCheckpoint
from autotune.trial.fit import EpochCallback, FitResult, fine_tune
from autotune.trial.flips import outputs
from autotune.trial.losses import DISTILLATION
from autotune.trial.resume import Resume


@dataclass
class TrialMaker:
    """The source model, the data on the device, the rankings, and how long a trial trains."""

    source: nn.Module
    data: TaskData
    """On ``device``."""
    analyses: dict[str, Analysis]
    """The rankings trials read, by method (filled in by the search before trials start)."""
    device: torch.device
    max_epochs: int
    patience: int
    metric: str
    seed: int
    """Trial N trains with ``seed + N``."""
    reference: torch.Tensor | None = None
    """The source model's predictions on the validation split: what every trial's fixed and
    broken errors are counted against (a slimming maker keeps the original source's)."""
    amp: str = "auto"
    channels_last: str = "auto"
    """``SearchSettings.amp`` and ``.channels_last``: how fits use the device (``trial.accel``)."""
    _teacher: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, init=False, repr=False)

    def accel(self, model: nn.Module) -> Accel:
        """How fits of ``model`` use the device: precision and memory format."""
        return plan(self.device, model, self.amp, self.channels_last)

    def teacher(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``source``'s logits on the training and validation samples, computed once: what the
        distillation losses learn from (the teacher sees every input column)."""
        if self._teacher is None:
            model = copy.deepcopy(self.source).to(self.device)
            self._teacher = (
                outputs(model, self.data.x_train),
                outputs(model, self.data.x_val),
            )
        return self._teacher

    def _teacher_for(self, config: TrialConfig, pooled: bool = False) -> torch.Tensor | None:
        if config.loss not in DISTILLATION:
            return None
        train, val = self.teacher()
        return torch.cat([train, val]) if pooled else train

    @property
    def example(self) -> torch.Tensor:
        """A CPU input batch for tracing the model's structure."""
        return self.data.x_val[:2].cpu()

    def build(self, config: TrialConfig) -> tuple[nn.Module, Changes, TaskData]:
        """The trial's model before training, on the device, and the data it takes."""
        model, changes = build(self.source, config, self.analyses, self.example)
        data = self.data if changes.features is None else self.data.columns(changes.features)
        return model.to(self.device), changes, data

    def trained(
        self, config: TrialConfig, number: int, checkpoints: Checkpoints, seeded: int | None = None
    ) -> tuple[nn.Module, Changes, TaskData, str]:
        """Trial ``number``'s trained model, the data it takes, and where its weights came from:
        its checkpoint when one was saved, else retrained with its seed (that of trial
        ``seeded``, when it ran again an interrupted or dead trial: ``search.trials.continued``)."""
        model, changes, data = self.build(config)
        why = ""
        try:
            state = checkpoints.load(number, self.device)
        except UnreadableCheckpoint as e:
            state, why = None, f" (its checkpoint {e})"
        if state is not None:
            model.load_state_dict(state)
            return model, changes, data, f"weights saved by trial {number}"
        self.fit(model, config, number if seeded is None else seeded, data)
        return model, changes, data, f"retrained from trial {number}'s parameters and seed{why}"

    def refit(
        self, model: nn.Module, config: TrialConfig, number: int, data: TaskData, epochs: int
    ) -> FitResult:
        """Train ``model`` on the training and validation samples together for ``epochs``
        epochs (no early stopping, no choice of epoch: validation is training data now)."""
        pooled = dataclasses.replace(
            data,
            x_train=inputs_join(data.x_train, data.x_val),
            y_train=torch.cat([data.y_train, data.y_val]),
        )
        return fine_tune(
            model, pooled, config, max_epochs=epochs, patience=epochs + 1, metric=self.metric,
            seed=self.seed + number, restore_best=False,
            accel=self.accel(model),
            teacher=self._teacher_for(config, pooled=True),
        )  # fmt: skip

    def fit(
        self,
        model: nn.Module,
        config: TrialConfig,
        number: int,
        data: TaskData | None = None,
        on_epoch: EpochCallback | None = None,
        resume: Resume | None = None,
    ) -> FitResult:
        """Fine-tune ``model`` in place with trial ``number``'s seed (``resume``: continued from,
        and saved to, an in-trial checkpoint)."""
        return fine_tune(
            model,
            self.data if data is None else data,
            config,
            max_epochs=self.max_epochs,
            patience=self.patience,
            metric=self.metric,
            seed=self.seed + number,
            on_epoch=on_epoch,
            accel=self.accel(model),
            teacher=self._teacher_for(config),
            resume=resume,
        )
