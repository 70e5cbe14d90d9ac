from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import gated_log_probs, randomise_norms
from torch import nn

from autotune.rank.gates import sites
from autotune.rank.methods import score
from autotune.results.deploy import save_model
from autotune.trial.prune import drop_features, prune


class TwoBranch(nn.Module):
    """Two conv branches concatenated along channels, then a conv over the concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(14, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mix(torch.cat([self.left(x), self.right(x)], 1))
        return self.head(h.mean((2, 3)))


def _check_pruned_equals_masked(model: nn.Module, x: torch.Tensor, ratio: float) -> nn.Module:
    y = torch.arange(len(x)) % 4
    scores = score("shap", model, x, y, background=8, nsamples=4)
    pruned = copy.deepcopy(model)
    kept = prune(pruned, scores.channels, x[:2], ratio)
    assert all(len(c) < len(scores.channels[layer]) for layer, c in kept.items())
    found = sites(model, x)
    expected = gated_log_probs(model, found, kept, x)
    with torch.no_grad():
        got = torch.log_softmax(pruned.eval()(x), 1)[:, 0]
    # Structural pruning removes exactly what gating those channels to zero removes: nothing
    # the dependency graph should have kept (BatchNorm statistics, residual and concatenated
    # channels) went with them.
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    return pruned


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet18_pruned_at_half_runs_smaller_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    randomise_norms(model)
    x = torch.randn(6, 3, 32, 32)
    pruned = _check_pruned_equals_masked(model, x, 0.5)
    assert _params(pruned) < 0.35 * _params(model)  # half the channels: about a quarter the weights
    assert pruned.conv1.out_channels == 32 and pruned.fc.out_features == 4
    files = save_model(pruned.eval(), x[:2], tmp_path)
    assert set(files) == {"model.pt", "model.pt2"}
    program = torch.export.load(tmp_path / "model.pt2").module()
    with torch.no_grad():
        torch.testing.assert_close(program(x), pruned(x), atol=1e-5, rtol=1e-5)
        reloaded = torch.load(tmp_path / "model.pt", weights_only=False)
        torch.testing.assert_close(reloaded(x), pruned(x))


def test_concatenated_branches_prune_consistently() -> None:
    torch.manual_seed(0)
    model = TwoBranch().eval()
    randomise_norms(model)
    x = torch.randn(8, 3, 6, 6)
    pruned = _check_pruned_equals_masked(model, x, 0.5)
    assert pruned.mix[0].in_channels == pruned.left[0].out_channels + pruned.right[0].out_channels
    assert pruned.left[0].out_channels == 4 and pruned.right[0].out_channels == 3


def test_per_layer_ratios_prune_only_the_layers_named() -> None:
    torch.manual_seed(0)
    model = TwoBranch().eval()
    x = torch.randn(8, 3, 6, 6)
    scores = score("l1", model, x, torch.zeros(8, dtype=torch.long))
    kept = prune(model, scores.channels, x[:2], per_layer={"mix.0": 0.5})
    assert len(kept["mix.0"]) == 6 and len(kept["left.0"]) == 8
    # The ones kept are the highest-scored.
    top = sorted(range(12), key=lambda c: -scores.channels["mix.0"][c])[:6]
    assert kept["mix.0"] == sorted(top)
    with pytest.raises(ValueError, match="no scores for layers"):
        prune(model, scores.channels, x[:2], per_layer={"nope": 0.5})


def test_dropped_features_equal_zeroed_inputs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3)).eval()
    x = torch.randn(5, 6)
    keep = [0, 2, 3, 5]
    smaller = copy.deepcopy(model)
    drop_features(smaller, keep, x)
    assert smaller[0].in_features == 4
    zeroed = x.clone()
    zeroed[:, [1, 4]] = 0
    with torch.no_grad():
        torch.testing.assert_close(smaller(x[:, keep]), model(zeroed))


def test_feature_dropping_needs_a_linear_input_layer() -> None:
    model = nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 3)).eval()
    with pytest.raises(ValueError, match="goes into '0' \\(BatchNorm1d\\)"):
        drop_features(model, [0, 1], torch.randn(4, 6))


def test_global_ranking_prunes_the_lowest_channels_across_layers() -> None:
    import numpy as np

    torch.manual_seed(0)
    model = TwoBranch().eval()
    x = torch.randn(4, 3, 6, 6)
    scores = {
        "left.0": np.array([0.01, 0.02, 0.03, 0.04, 2, 2, 2, 2]),
        "right.0": np.array([0.05, 0.06, 3, 3, 3, 3]),
        "mix.0": np.linspace(1.0, 2.0, 12),
    }
    kept = prune(model, scores, x[:2], 0.3, global_ranking=True)  # 8 of the 26 channels
    assert kept["left.0"] == [4, 5, 6, 7]
    assert kept["right.0"] == [2, 3, 4, 5]
    assert kept["mix.0"] == list(range(2, 12))
    assert model(x).shape == (4, 4)


def test_a_model_the_dependency_graph_cannot_trace_is_scored_and_left_unpruned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch_pruning as tp

    def fail(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("untraceable")

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", fail)
    model = TwoBranch().eval()
    x = torch.randn(4, 3, 6, 6)
    scores = score("taylor", model, x, torch.zeros(4, dtype=torch.long))
    assert scores.channels == {} and scores.layers is not None and len(scores.layers) == 4
    assert "cannot trace" in scores.unpruned["mix.0"]
    assert prune(model, scores.channels, x[:2], 0.5) == {}


@pytest.mark.parametrize("global_ranking", [False, True])
def test_a_frozen_layer_feeding_a_depthwise_conv_loses_the_same_channels(
    global_ranking: bool,
) -> None:
    # An adapted model keeps its parent's frozen layers; pruning must still see that the
    # expand conv feeds the depthwise one (torch-pruning traces autograd).
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    ).eval()  # fmt: skip
    for param in model[0].parameters():
        param.requires_grad_(False)
    x = torch.randn(2, 3, 6, 6)
    gen = torch.Generator().manual_seed(1)
    scores = {name: torch.rand(8, generator=gen).numpy() for name in ("0", "3")}
    kept = prune(model, scores, x, 0.5, global_ranking=global_ranking)
    assert kept["0"] == kept["3"] and len(kept["3"]) < 8
    assert model[0].out_channels == model[3].in_channels == model[3].out_channels
    assert model(x).shape == (2, 2)
