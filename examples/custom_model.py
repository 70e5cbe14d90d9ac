"""Your own model class with autotune: a wine classifier, tuned and slimmed for new conditions.

Trains a small MLP on part of scikit-learn's wine data, saves its state_dict, then lets autotune
drop the least useful input features, prune neurons and fine-tune it, through the Python API.
The same search from the command line:

    autotune search --model runs/custom/wine.pt --arch examples/custom_model.py:WineNet \\
        --data sklearn:wine --space tabular --trials 20 --out runs/custom

Run: python examples/custom_model.py [--trials 12] [--out runs/custom]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import autotune
from autotune.load.job import ModelSpec


class WineNet(nn.Module):
    """13 chemical measurements in, 3 cultivars out."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def pretrain(path: Path) -> None:
    """A deliberately short training run: the model autotune starts from."""
    data = autotune.load_data("sklearn:wine")
    torch.manual_seed(0)
    model = WineNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(data.x_train), data.y_train).backward()
        optimizer.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("runs/custom"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    weights = args.out / "wine.pt"
    pretrain(weights)
    spec = ModelSpec(str(weights), arch=f"{Path(__file__).resolve()}:WineNet")
    result = autotune.search(
        spec, "sklearn:wine", space="tabular", trials=args.trials, out=args.out
    )
    assert result.best is not None
    config = result.best.config
    print(
        f"best trial {result.best.trial}: val accuracy {config['metrics']['val_accuracy']:.3f} "
        f"(baseline {config['metrics']['baseline_val_accuracy']:.3f}), "
        f"{config['structure']['params']['model']:,} of "
        f"{config['structure']['params']['source']:,} parameters; "
        f"input columns kept: {config['structure']['inputs']['columns']}"
    )


if __name__ == "__main__":
    main()
