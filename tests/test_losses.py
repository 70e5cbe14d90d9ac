from __future__ import annotations

import torch
import torch.nn.functional as F

from autotune.config import TrialConfig
from autotune.trial.losses import focal_loss, make_loss

LOGITS = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
TARGET = torch.arange(16) % 5


def test_focal_with_gamma_zero_is_cross_entropy() -> None:
    assert torch.allclose(focal_loss(LOGITS, TARGET, 0.0), F.cross_entropy(LOGITS, TARGET))


def test_focal_weighs_easy_samples_less() -> None:
    assert focal_loss(LOGITS, TARGET, 2.0) < F.cross_entropy(LOGITS, TARGET)


def test_losses_by_name() -> None:
    smooth = make_loss(TrialConfig(loss="label_smoothing", label_smoothing=0.2))(LOGITS, TARGET)
    assert torch.allclose(smooth, F.cross_entropy(LOGITS, TARGET, label_smoothing=0.2))
    plain = make_loss(TrialConfig())(LOGITS, TARGET)
    assert torch.allclose(plain, F.cross_entropy(LOGITS, TARGET))


def test_focal_gradients_stay_finite_below_gamma_one_on_confident_samples() -> None:
    # p_t rounds to 1 here: (1 - p)**0.7 has an infinite slope there.
    logits = torch.tensor([[30.0, 0.0], [0.0, 2.0]], requires_grad=True)
    focal_loss(logits, torch.tensor([0, 0]), 0.7).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad[1].abs().sum() > 0  # the wrong sample still pulls
