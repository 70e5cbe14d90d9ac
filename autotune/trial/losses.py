"""Loss variants by name: the registry a search space's ``loss`` parameter refers to."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

from autotune.errors import TrialFailed

if TYPE_CHECKING:
    from autotune.config import TrialConfig


class LossFn(Protocol):
    def __call__(
        self, logits: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The batch's loss; ``teacher``: the teacher model's logits on the same samples (the
        distillation losses need them, the others ignore them)."""
        ...


DISTILLATION = ("distill", "focal_distill")
"""Losses that learn from a teacher's outputs as well as from the labels."""


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mean of ``-(1 - p_t)**gamma * log(p_t)`` (Lin et al., 2017): easy samples weigh less."""
    log_p = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    # (1 - p)**gamma has an infinite slope at p = 1 when gamma < 1: 0 x inf = NaN gradients on
    # confidently right samples. Keeping 1 - p off zero keeps them finite (and ~0).
    weight = (1.0 - log_p.exp()).clamp_min(1e-6) ** gamma
    return (-weight * log_p).mean()


def distillation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    teacher: torch.Tensor,
    weight: float,
    temperature: float,
    focal: bool = False,
) -> torch.Tensor:
    """``(1 - weight) * CE + weight * T**2 * KL(teacher_T || student_T)`` (Hinton et al., 2015).

    ``focal``: the KL term counts only on samples the teacher classifies right (focal
    distillation, Yan et al., CVPR 2021, with alpha 0 and beta 1): the student is held to the
    teacher where the teacher is right, so it breaks fewer of those, and is free elsewhere.
    """
    ce = F.cross_entropy(logits, target)
    t = temperature
    kl = F.kl_div(
        F.log_softmax(logits / t, dim=1),
        F.log_softmax(teacher.float() / t, dim=1),
        reduction="none",
        log_target=True,
    ).sum(1)
    if focal:
        kl = kl * (teacher.argmax(1) == target)
    return (1.0 - weight) * ce + weight * t * t * kl.mean()


def _cross_entropy(config: TrialConfig) -> LossFn:
    return lambda logits, target, teacher=None: F.cross_entropy(logits, target)


def _label_smoothing(config: TrialConfig) -> LossFn:
    epsilon = config.label_smoothing
    return lambda logits, target, teacher=None: F.cross_entropy(
        logits, target, label_smoothing=epsilon
    )


def _focal(config: TrialConfig) -> LossFn:
    gamma = config.focal_gamma
    return lambda logits, target, teacher=None: focal_loss(logits, target, gamma)


def _distill(focal: bool) -> Callable[[TrialConfig], LossFn]:
    def make(config: TrialConfig) -> LossFn:
        weight, temperature = config.distill_weight, config.distill_temperature

        def loss(
            logits: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor | None = None
        ) -> torch.Tensor:
            if teacher is None:
                raise TrialFailed(f"the {config.loss!r} loss needs a teacher's outputs")
            return distillation_loss(logits, target, teacher, weight, temperature, focal)

        return loss

    return make


LOSSES: dict[str, Callable[[TrialConfig], LossFn]] = {
    "cross_entropy": _cross_entropy,
    "label_smoothing": _label_smoothing,
    "focal": _focal,
    "distill": _distill(focal=False),
    "focal_distill": _distill(focal=True),
}


def make_loss(config: TrialConfig) -> LossFn:
    return LOSSES[config.loss](config)
