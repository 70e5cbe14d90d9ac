from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autotune.config import TrialConfig
from autotune.errors import TrialFailed
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


TEACHER = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))


def test_distillation_at_weight_zero_is_cross_entropy() -> None:
    ce = F.cross_entropy(LOGITS, TARGET)
    for loss in ("distill", "focal_distill"):
        config = TrialConfig(loss=loss, distill_weight=0.0, distill_temperature=3.0)
        assert torch.allclose(make_loss(config)(LOGITS, TARGET, TEACHER), ce)


def test_distillation_pulls_towards_the_teacher() -> None:
    config = TrialConfig(loss="distill", distill_weight=1.0, distill_temperature=2.0)
    loss = make_loss(config)
    assert loss(TEACHER, TARGET, TEACHER) < 1e-6  # the student is the teacher: nothing to learn
    assert loss(LOGITS, TARGET, TEACHER) > 0.1


def test_focal_distillation_counts_only_the_samples_the_teacher_gets_right() -> None:
    wrong_everywhere = F.one_hot((TARGET + 1) % 5, 5).float() * 10
    config = TrialConfig(loss="focal_distill", distill_weight=0.4)
    loss = make_loss(config)(LOGITS, TARGET, wrong_everywhere)
    assert torch.allclose(loss, 0.6 * F.cross_entropy(LOGITS, TARGET))
    right_everywhere = F.one_hot(TARGET, 5).float() * 10
    assert make_loss(config)(LOGITS, TARGET, right_everywhere) > loss


def test_distillation_without_a_teacher_fails_the_trial_with_a_reason() -> None:
    with pytest.raises(TrialFailed, match="needs a teacher"):
        make_loss(TrialConfig(loss="distill"))(LOGITS, TARGET)
