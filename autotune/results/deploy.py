"""The exported program with its input normalisation inside (``--export-preprocessing``), so the
deployed model takes raw images scaled to [0, 1], as the data's files were read."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Normalized(nn.Module):
    """``model((x - mean) / std)``, per channel."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def with_preprocessing(
    model: nn.Module, example: torch.Tensor, preprocessing: dict[str, Any]
) -> tuple[nn.Module, torch.Tensor, str] | str:
    """``model`` taking raw [0, 1] images, a raw example batch to trace it with, and how to load
    the saved program; or why there is nothing to include.

    ``example`` is a batch of model inputs (normalised): its raw images trace the program.
    """
    stats = preprocessing.get("normalize")
    if not stats:
        return "no normalisation to include: the model takes images scaled to [0, 1] already"
    wrapped = Normalized(model, stats["mean"], stats["std"]).eval()
    raw = example * wrapped.std + wrapped.mean
    size = preprocessing.get("crop")
    shape = f"{preprocessing.get('channels')}x{size}x{size}" if size else "the input's shape"
    how = (
        "torch.export.load('model.pt2').module()  # needs only torch; takes raw images scaled "
        f"to [0, 1] ({shape}, shorter side resized then centre-cropped): normalisation inside"
    )
    return wrapped, raw, how
