"""The built-in demo: a small CNN pretrained on scikit-learn's digits, and a shifted target domain.

The source domain is half of the 1797 digits as they are. The target domain is the other half,
rotated by 30-60 degrees either way and blurred: the pretrained CNN gets about a third of it
right, so there is a large, real gain for fine-tuning to find. Everything is built on first use,
deterministically, in a few seconds on one CPU thread, and cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from autotune.errors import ModelLoadError
from autotune.load.architecture import given
from autotune.paths import cache_dir, check_writable, write_atomically

DEMO_ARCH = "autotune.load.demo:DigitsCNN"
_VERSION = "v1"  # bump when the demo model or data change, so caches rebuild


class DigitsCNN(nn.Module):
    """Three conv blocks and a two-layer head for 1x8x8 images."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class DemoFiles:
    model: Path
    """state_dict of ``DigitsCNN`` pretrained on the source domain."""
    data: Path
    """Tensors file of the target domain: train/val/test splits."""


def demo_files() -> DemoFiles:
    """Paths of the demo model and data, building them on first use."""
    folder = cache_dir() / f"demo-{_VERSION}"
    files = DemoFiles(folder / "model.pt", folder / "data.pt")
    if not (files.model.is_file() and files.data.is_file()):
        # Made and checked before the build: a folder it cannot write was a traceback.
        fix = "set AUTOTUNE_CACHE_DIR to a folder you can write to"
        check_writable(folder, "the demo's cache folder", fix)
        state, data = build_demo()
        # Several workers may build the demo at once: each writes a file of its own and
        # renames it.
        write_atomically(files.data, lambda f: torch.save(data, f))
        write_atomically(files.model, lambda f: torch.save(state, f))
    return files


def demo_model(arch: str | None = None, num_classes: int | None = None) -> tuple[Path, str]:
    """The demo model's file and architecture, building them on first use. The demo is one
    fixed network of 10 classes: an ``--arch`` or ``--num-classes`` given with it can change
    nothing (or only fail on its weights), so each is refused by name."""
    found = given(arch, num_classes)
    if found is not None:
        flag, value = found
        raise ModelLoadError(
            f"{flag} {value!r} does not apply to --model demo (the built-in demo model, a "
            f"digits CNN of 10 classes): drop {flag}, or give a model file"
        )
    return demo_files().model, DEMO_ARCH


def build_demo(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Pretrain ``DigitsCNN`` on the source half; return its state_dict and the target splits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=gen)
    source, target = order[:900], order[900:]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread is the fastest here and makes the build repeatable
    try:
        torch.manual_seed(seed)
        model = DigitsCNN()
        _pretrain(model, x[source], y[source], gen)
    finally:
        torch.set_num_threads(threads)

    xt, yt = shift_domain(x[target], torch.Generator().manual_seed(seed + 1)), y[target]
    data = {
        "x_train": xt[:400],
        "y_train": yt[:400],
        "x_val": xt[400:600],
        "y_val": yt[400:600],
        "x_test": xt[600:],
        "y_test": yt[600:],
    }
    return model.state_dict(), data


def _pretrain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(15):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            batch = perm[i : i + 64]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()


def shift_domain(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image by 30-60 degrees (either way) and blur it with a 3x3 binomial kernel."""
    n = len(x)
    degrees = torch.rand(n, generator=gen) * 30 + 30
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    angle = degrees * sign * math.pi / 180
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros(n)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    rotated = F.grid_sample(x, grid, align_corners=False)
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :]) / 16.0
    return F.conv2d(rotated, kernel.view(1, 1, 3, 3), padding=1)
