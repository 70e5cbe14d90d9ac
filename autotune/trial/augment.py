"""Train-time augmentation of image batches (the space parameter ``augment``).

``light``: a random resized crop (35% to 100% of the area, aspect 3/4 to 4/3: milder than
torchvision's 8% floor, which a few epochs of fine-tuning do not recover from) and a horizontal
flip, per sample, done by one affine resampling of the batch where it already is (the device), so
resident and streamed data augment the same way and the loader's workers only decode.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

AUGMENTS = ("none", "light")
MIN_SIDE = 16
"""Images smaller than this are not augmented: a crop of a few pixels destroys them."""
SCALE = (0.35, 1.0)
RATIO = (3 / 4, 4 / 3)


def can_augment(sample_shape: tuple[int, ...]) -> bool:
    """Whether inputs of this shape (without the batch) are images large enough to crop."""
    return len(sample_shape) == 3 and min(sample_shape[1:]) >= MIN_SIDE


def light(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) cropped at random, resized back, and flipped with
    probability 1/2. The random draws come from ``generator`` (on the CPU), so a trial's
    augmentation follows its seed."""
    n = len(x)
    area = torch.empty(n).uniform_(*SCALE, generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(RATIO[0]), math.log(RATIO[1]), generator=generator)
    ratio = log_ratio.exp()
    # Width and height of the crop as fractions of the image's.
    w = (area * ratio).sqrt().clamp(max=1.0)
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
