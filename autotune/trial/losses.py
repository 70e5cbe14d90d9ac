"""Loss variants by name: the registry a search space's ``loss`` parameter refers to."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from autotune.config import TrialConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mean of ``-(1 - p_t)**gamma * log(p_t)`` (Lin et al., 2017): easy samples weigh less."""
    log_p = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    # (1 - p)**gamma has an infinite slope at p = 1 when gamma < 1: 0 x inf = NaN gradients on
    # confidently right samples. Keeping 1 - p off zero keeps them finite (and ~0).
    weight = (1.0 - log_p.exp()).clamp_min(1e-6) ** gamma
    return (-weight * log_p).mean()


def _cross_entropy(config: TrialConfig) -> LossFn:
    return F.cross_entropy


def _label_smoothing(config: TrialConfig) -> LossFn:
    epsilon = config.label_smoothing
    return lambda logits, target: F.cross_entropy(logits, target, label_smoothing=epsilon)


def _focal(config: TrialConfig) -> LossFn:
    gamma = config.focal_gamma
    return lambda logits, target: focal_loss(logits, target, gamma)


LOSSES: dict[str, Callable[[TrialConfig], LossFn]] = {
    "cross_entropy": _cross_entropy,
    "label_smoothing": _label_smoothing,
    "focal": _focal,
}


def make_loss(config: TrialConfig) -> LossFn:
    return LOSSES[config.loss](config)
