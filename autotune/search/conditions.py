"""Trial parameters that matter only under another parameter's value (``momentum`` under
``optimizer: sgd``). The space samples them only then, so TPE and the dashboard see no
meaningless values; an export lists them only then, so its ``config.yaml`` names no setting
the trial did not apply (a ``cross_entropy`` trial with a ``label_smoothing`` of 0.1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from autotune.config import TrialConfig
from autotune.trial.losses import DISTILLATION

CONDITIONS = {
    "momentum": ("optimizer", ("sgd",)),
    "label_smoothing": ("loss", ("label_smoothing",)),
    "focal_gamma": ("loss", ("focal",)),
    "distill_weight": ("loss", DISTILLATION),
    "distill_temperature": ("loss", DISTILLATION),
}
"""Parameter -> (the parameter it depends on, the values of that one under which it applies)."""


def applies(name: str, values: Mapping[str, Any]) -> bool:
    """Whether parameter ``name`` matters beside ``values`` (one they do not give is at its
    ``TrialConfig`` default)."""
    condition = CONDITIONS.get(name)
    if condition is None:
        return True
    parent, wanted = condition
    return values.get(parent, getattr(TrialConfig(), parent)) in wanted


def applied_values(config: TrialConfig) -> dict[str, Any]:
    """``config``'s values less those its other values leave unused."""
    values = dataclasses.asdict(config)
    return {name: value for name, value in values.items() if applies(name, values)}
