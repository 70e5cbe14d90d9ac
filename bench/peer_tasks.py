"""The tasks of ``bench/peers.py``: a source model and shifted target data, built deterministically.

Each builder writes what autotune's CLI reads (a ``state_dict`` file, and a ``.pt`` dict of
``x_train, y_train, x_val, y_val, x_test, y_test``) and returns the ``--arch`` it needs. The model
classes live here so that ``--arch bench/peer_tasks.py:TabularMLP`` can build them by path.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

TABULAR_NOISE_FEATURES = 20
"""Pure-noise columns appended to breast_cancer's 30 features."""
TABULAR_IN_FEATURES = 30 + TABULAR_NOISE_FEATURES
TABULAR_CLASSES = 2
MAGNIFICATION = 1.5
"""The target's size features read this much larger (areas its square): another scanner."""


class TabularMLP(nn.Module):
    """in -> 64 -> 32 -> classes, ReLU, one Dropout; the input goes straight into a Linear."""

    def __init__(
        self, in_features: int = TABULAR_IN_FEATURES, num_classes: int = TABULAR_CLASSES
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, 64),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(64, 32),
            nn.ReLU(),
            nn.Linear(32, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _pretrain(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
) -> None:
    """Adam with a cosine decay to zero: the source model, trained on the source domain."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(x) // batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            if len(idx) < 2:  # BatchNorm cannot train on one sample
                continue
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()


def _split_target(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, n_train: int, n_val: int, n_test: int
) -> dict[str, torch.Tensor]:
    order = torch.randperm(len(x), generator=gen)
    tr, va = order[:n_train], order[n_train : n_train + n_val]
    te = order[n_train + n_val : n_train + n_val + n_test]
    return {
        "x_train": x[tr].contiguous(), "y_train": y[tr].contiguous(),
        "x_val": x[va].contiguous(), "y_val": y[va].contiguous(),
        "x_test": x[te].contiguous(), "y_test": y[te].contiguous(),
    }  # fmt: skip


def build_tabular(folder: Path, seed: int = 0) -> dict[str, object]:
    """breast_cancer with a covariate shift, plus noise columns; an MLP trained on the source.

    Source and target are split at the median of the feature least correlated with the label
    (so the classes stay balanced alike), and the target was measured at a different
    magnification: its radius and perimeter features read MAGNIFICATION times larger, its
    areas MAGNIFICATION squared. Standardisation uses the source's statistics, as a deployed
    model's would.
    """
    from sklearn.datasets import load_breast_cancer

    gen = torch.Generator().manual_seed(seed)
    raw = load_breast_cancer()
    x = torch.tensor(raw.data, dtype=torch.float32)
    y = torch.tensor(raw.target, dtype=torch.long)
    xc = (x - x.mean(0)) / x.std(0)
    yc = (y.float() - y.float().mean()) / y.float().std()
    split_feature = int((xc * yc[:, None]).mean(0).abs().argmin())
    is_target = x[:, split_feature] > x[:, split_feature].median()
    noise = torch.randn(len(x), TABULAR_NOISE_FEATURES, generator=gen)
    x = torch.cat([x, noise], 1)
    xs, ys, xt, yt = x[~is_target], y[~is_target], x[is_target].clone(), y[is_target]
    for i, name in enumerate(raw.feature_names):
        if "radius" in name or "perimeter" in name:
            xt[:, i] *= MAGNIFICATION
        elif "area" in name:
            xt[:, i] *= MAGNIFICATION**2
    mean, std = xs.mean(0), xs.std(0)
    xs, xt = (xs - mean) / std, (xt - mean) / std

    torch.manual_seed(seed)
    model = TabularMLP()
    _pretrain(model, xs, ys, epochs=100, lr=1e-3, batch=32, seed=seed)
    # Target: about 40% test, the rest train with 20% of it as validation.
    n_test = int(0.4 * len(xt))
    n_val = int(0.2 * (len(xt) - n_test))
    data = _split_target(xt, yt, gen, len(xt) - n_test - n_val, n_val, n_test)
    return _save(folder, "tabular", model, data, arch=f"{Path(__file__)}:TabularMLP")


def _rotate_blur(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image by 30-60 degrees either way, then blur it with a 3x3 Gaussian."""
    n = len(x)
    angle = (30 + 30 * torch.rand(n, generator=gen)) * torch.where(
        torch.rand(n, generator=gen) < 0.5, -1.0, 1.0
    )
    theta = angle * math.pi / 180
    cos, sin, zero = theta.cos(), theta.sin(), torch.zeros(n)
    affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :]) / 16
    weight = kernel.expand(x.shape[1], 1, 3, 3).contiguous()
    return F.conv2d(x, weight, padding=1, groups=x.shape[1])


def build_resnet18(folder: Path, seed: int = 0) -> dict[str, object]:
    """torchvision resnet18 (random init) trained briefly on half of digits at 3x32x32; the
    target is the other half rotated and blurred: 240 train, 60 validation, 300 test."""
    import torchvision
    from sklearn.datasets import load_digits

    gen = torch.Generator().manual_seed(seed)
    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32)[:, None] / 16
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    y = torch.tensor(raw.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=gen)
    source, target = order[: len(x) // 2], order[len(x) // 2 :]
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    _pretrain(model, x[source], y[source], epochs=6, lr=1e-3, batch=32, seed=seed)
    xt = _rotate_blur(x[target], gen)
    data = _split_target(xt, y[target], gen, 240, 60, 300)
    return _save(folder, "resnet18", model, data, arch="torchvision:resnet18", num_classes=10)


def _save(
    folder: Path,
    name: str,
    model: nn.Module,
    data: dict[str, torch.Tensor],
    arch: str,
    num_classes: int | None = None,
) -> dict[str, object]:
    folder.mkdir(parents=True, exist_ok=True)
    model_path, data_path = folder / f"{name}-model.pt", folder / f"{name}-data.pt"
    torch.save(model.state_dict(), model_path)
    torch.save(data, data_path)
    with torch.no_grad():
        source_test = (model(data["x_test"]).argmax(1) == data["y_test"]).float().mean().item()
    return {
        "model": str(model_path),
        "data": str(data_path),
        "arch": arch,
        "num_classes": num_classes,
        "sizes": [len(data[f"x_{s}"]) for s in ("train", "val", "test")],
        "source_test_accuracy": source_test,
    }
