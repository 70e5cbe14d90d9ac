"""Errors fixed and errors introduced against the source model, and the budget on the latter.

A negative flip is a sample the source model classified right that the new model gets wrong
(Yan et al., Positive-Congruent Training, CVPR 2021): what a user of the old model notices as a
regression, whatever the accuracy gained elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autotune.budget_text import budget_limit
from autotune.load.anatomy import device_of, set_training
from autotune.load.tasks import Inputs
from autotune.trial.fit import in_order


@torch.no_grad()
def outputs(model: nn.Module, x: Inputs) -> torch.Tensor:
    """``model``'s logits on ``x``, in eval mode, batched as ``fit.evaluate`` reads a split
    (the model's mode is restored), on the model's device."""
    was_training = model.training
    set_training(model, False)
    device = device_of(model, x.device)
    out = torch.cat([model(batch).float() for batch in in_order(x, device)])
    set_training(model, was_training)
    return out


def predictions(model: nn.Module, x: Inputs) -> torch.Tensor:
    """The class ``model`` predicts for each row of ``x``."""
    return outputs(model, x).argmax(1)


@dataclass(frozen=True)
class Flips:
    """How one model's predictions differ from the source model's on the same samples."""

    fixed: int
    """Samples the source got wrong and the model gets right."""
    broken: int
    """Samples the source got right and the model gets wrong: the negative flips."""
    samples: int
    source_right: int
    """Samples the source classifies right (the fixed/broken matrix's first row)."""
    per_class: dict[str, tuple[float | None, float | None]]
    """Class -> (source accuracy, model accuracy) on that class's samples (None: no sample)."""

    @property
    def rate(self) -> float:
        """Negative flips as a fraction of all samples (the PCT paper's negative flip rate)."""
        return self.broken / self.samples if self.samples else 0.0

    def attrs(self) -> dict[str, Any]:
        """What a trial records (user attributes; the exported ``config.yaml``)."""
        return {
            "fixed": self.fixed,
            "broken": self.broken,
            "flip_rate": round(self.rate, 6),
            "samples": self.samples,
            "source_right": self.source_right,
            "per_class_accuracy": {k: list(v) for k, v in self.per_class.items()},
        }


def count_flips(
    before: torch.Tensor,
    after: torch.Tensor,
    target: torch.Tensor,
    classes: list[str] | None = None,
) -> Flips:
    """Compare the source's predictions ``before`` with the model's ``after`` on ``target``."""
    before, after, target = before.cpu(), after.cpu(), target.cpu()
    was_right, is_right = before == target, after == target
    n_classes = len(classes) if classes is not None else int(target.max().item()) + 1
    per_class: dict[str, tuple[float | None, float | None]] = {}
    for c in range(n_classes):
        mask = target == c
        name = classes[c] if classes is not None else str(c)
        if not mask.any():
            per_class[name] = (None, None)
            continue
        per_class[name] = (
            round(was_right[mask].float().mean().item(), 6),
            round(is_right[mask].float().mean().item(), 6),
        )
    return Flips(
        fixed=int((~was_right & is_right).sum()),
        broken=int((was_right & ~is_right).sum()),
        samples=len(target),
        source_right=int(was_right.sum()),
        per_class=per_class,
    )


def flip_limit(budget: str | float, samples: int) -> int:
    """The most negative flips allowed on ``samples`` validation samples: a share (``0.01``,
    ``1%``) or a count (``5``), in the grammar of every budget (``budget_text.budget_limit``)."""
    return int(budget_limit(budget, samples, "flips"))


def flip_violation(broken: int, limit: int) -> float:
    """Constraint value (positive is over the budget), in units of the budget like the sizes'."""
    return (broken - limit) / max(limit, 1)
