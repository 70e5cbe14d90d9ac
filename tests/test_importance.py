from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from autotune.config import AnalysisOptions
from autotune.load.job import Job
from autotune.load.tasks import from_tensors
from autotune.rank.analysis import Analysis
from autotune.rank.analyze import analyze_job
from autotune.rank.gates import Gated, Site, sites
from autotune.rank.methods import _summarise, score


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _zero_channels(model: SmallCNN, conv: int, channels: list[int]) -> None:
    with torch.no_grad():
        layer, norm = model.features[conv], model.features[conv + 1]
        for c in channels:
            layer.weight[c] = 0
            layer.bias[c] = 0
            norm.weight[c] = 0
            norm.bias[c] = 0


def _trained_cnn() -> tuple[SmallCNN, torch.Tensor, torch.Tensor]:
    """A CNN trained to tell which third of an 8x8 image is brightest."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(96, 1, 8, 8, generator=gen)
    y = torch.stack([x[:, 0, :, a:b].mean((1, 2)) for a, b in ((0, 3), (3, 5), (5, 8))], 1)
    y = y.argmax(1)
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x[:32], y[:32]


def _noisy_tabular(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An MLP trained on 4 informative features followed by 4 columns of pure noise."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(300) % 3
    centers = torch.randn(3, 4, generator=gen) * 2
    x = torch.cat(
        [centers[y] + torch.randn(300, 4, generator=gen), torch.randn(300, 4, generator=gen)], 1
    )
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


def test_zeroed_channels_rank_last_with_shap() -> None:
    model, x, y = _trained_cnn()
    _zero_channels(model, 0, [2, 5])
    _zero_channels(model, 3, [0, 7])
    scores = score("shap", model, x, y, background=8, nsamples=8)
    assert set(scores.channels) == {"features.0", "features.3"}  # the classifier is not pruned
    found = sites(model, x)
    for layer, planted in (("features.0", [2, 5]), ("features.3", [0, 7])):
        ranks = scores.channels[layer]
        assert ranks[planted].max() == 0
        # Ranked last: a channel may tie with the planted ones only if removing it changes
        # no output either (a channel the ReLU after it silences on this data).
        tied = [c for c in range(8) if c not in planted and ranks[c] <= 0]
        assert len(tied) <= 2, ranks
        for c in tied:
            assert _removal_effect(model, found, layer, c, x, y) < 1e-6


def _removal_effect(
    model: nn.Module, found: list, layer: str, channel: int, x: torch.Tensor, y: torch.Tensor
) -> float:
    gated = Gated(copy.deepcopy(model), found, features=False)
    gated.bind(x, y)
    full = [torch.ones(len(x), s.channels) for s in found]
    cut = [g.clone() for g in full]
    cut[[s.layer for s in found].index(layer)][:, channel] = 0
    with torch.no_grad():
        return float((gated(*full) - gated(*cut)).abs().max())


def test_noise_features_rank_below_the_real_ones() -> None:
    model, x, y = _noisy_tabular()
    features = score("shap", model, x[:64], y[:64], background=16, nsamples=8).features
    assert features is not None and len(features) == 8
    assert features[4:].max() < features[:4].min(), features


def test_the_explained_model_comes_out_bit_identical() -> None:
    torch.manual_seed(0)
    model = SmallCNN().train()  # a mode the analysis must not change
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    x, y = torch.randn(12, 1, 8, 8), torch.arange(12) % 3
    for method in ("shap", "taylor", "l1", "random"):
        score(method, model, x, y, background=4, nsamples=4)
    assert model.training
    assert [n for n, _ in model.named_parameters()] == names  # no leaked parameters
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    assert all(p.grad is None for p in model.parameters())


def test_analysis_orders_save_reload_and_are_cached() -> None:
    model, x, y = _noisy_tabular()
    data = from_tensors(x[:200], y[:200], x_val=x[200:], y_val=y[200:])
    job = Job.from_objects(model, data)
    options = AnalysisOptions(samples=32, background=8, nsamples=4)
    first = analyze_job(job, "shap", options)
    assert not first.meta["cached"] and first.meta["samples"] == 32
    assert first.features is not None and len(first.channels["0"]) == 32
    again = analyze_job(job, "shap", options)
    assert again.meta["cached"] and again.channels == first.channels
    other = analyze_job(job, "shap", AnalysisOptions(samples=16, background=8, nsamples=4))
    assert not other.meta["cached"]  # other options, another cache entry


def test_analysis_json_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    analysis = Analysis("l1", {"a": [0.3, 0.1]}, None, [1.0, 2.0], ["x", "z"], {"samples": 4})
    path = tmp_path / "a.json"
    analysis.save(path)
    loaded = Analysis.load(path)
    assert loaded == analysis
    assert loaded.pruning_order("a") == [1, 0]
    assert loaded.unfreeze_order(["a", "b"]) == ["b", "a"]  # no error scores: output first


def test_orders_put_the_lowest_units_and_the_most_error_driving_layers_first() -> None:
    analysis = Analysis(
        "shap",
        channels={"conv": [0.3, 0.1, 0.2, 0.1]},
        layers={"conv": 0.1, "fc": 0.5},
        features=[0.5, 0.0, 0.2],
    )
    assert analysis.pruning_order("conv") == [1, 3, 2, 0]  # ties keep channel order
    assert analysis.feature_order() == [1, 2, 0]
    # Scored layers by error score; unscored ones after them, from the output backwards.
    assert analysis.unfreeze_order(["stem", "conv", "fc", "out"]) == ["fc", "conv", "out", "stem"]


def test_deep_explainer_ranks_zeroed_channels_last_and_names_its_limit() -> None:
    import torchvision

    model, x, y = _trained_cnn()
    _zero_channels(model, 0, [2, 5])
    scores = score("shap", model, x, y, background=8, explainer="deep")
    assert scores.channels["features.0"][[2, 5]].max() == 0
    assert sorted(scores.channels["features.0"])[2] > 0
    resnet = torchvision.models.resnet18(num_classes=3).eval()
    with pytest.raises(ValueError, match=r"in-place operations .* use the default explainer"):
        score("shap", resnet, torch.randn(2, 3, 16, 16), y[:2], background=4, explainer="deep")


def test_batched_expected_gradients_equal_shaps_gradient_explainer() -> None:
    import shap

    from autotune.rank.expected_gradients import expected_gradients
    from autotune.rank.methods import _coalitions

    model, x, y = _trained_cnn()
    copied = copy.deepcopy(model)
    for p in copied.parameters():
        p.requires_grad_(False)
    gated = Gated(copied, sites(copied, x), features=False)
    x, y = x[:6], y[:6]
    gated.bind(x[:1], y[:1])
    coalitions = _coalitions(gated.gate_sizes(), 8, (0.0, 1.0), seed=3)
    ours = expected_gradients(gated, x, y, coalitions, nsamples=5, seed=3)
    gated.bind(x[:1], y[:1])
    explainer = shap.GradientExplainer(gated, coalitions, batch_size=5)
    everything = [torch.ones(1, n) for n in gated.gate_sizes()]
    for j in range(len(x)):
        gated.bind(x[j : j + 1], y[j : j + 1])
        theirs = explainer.shap_values(everything, nsamples=5, rseed=3 + j)
        for mine, reference in zip(ours, theirs, strict=True):
            assert mine[j] == pytest.approx(reference.reshape(-1), abs=1e-6)


def test_a_gated_copy_for_another_device_is_gated_by_its_own_inputs() -> None:
    # The analysis explains on a copy moved to the device; a plain deep copy kept hooks that
    # read the original's gates, ran ungated and gave the gates no gradient on a GPU.
    model, x, y = _trained_cnn()
    gated = Gated(copy.deepcopy(model), sites(model, x), features=False)
    moved = gated.on("cpu")
    assert moved.model is not gated.model
    x, y = x[:4], y[:4]
    gates = [torch.rand(4, n, requires_grad=True) for n in gated.gate_sizes()]
    outputs = []
    for each in (moved, gated):  # the original keeps working, its hooks not doubled
        each.bind(x, y)
        outputs.append(each(*gates))
    assert torch.equal(outputs[0], outputs[1])
    grads = torch.autograd.grad(outputs[0].sum(), gates)
    assert all(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        closed = moved(*[torch.zeros_like(g) for g in gates])
    assert not torch.allclose(closed, outputs[0])


def test_each_mistake_is_driven_by_the_layer_giving_the_most_evidence_against_it() -> None:
    found = [Site("conv", "conv", 1, 2, True), Site("fc", "fc", -1, 3, False)]
    # Four samples, the first three misclassified; per unit attributions in nats.
    conv = np.array([[-2.0, -1.0], [-1.5, 0.0], [0.0, -0.1], [-9.0, -9.0]])
    fc = np.array([[-0.5, 0.0, 0.0], [0.0, -1.0, 0.0], [-0.4, 0.0, 0.0], [0.0, 0.0, 0.0]])
    wrong = np.array([True, True, True, False])
    scores = _summarise(found, [conv, fc], wrong, features=False)
    assert scores.driven == {"conv": 2, "fc": 1}  # the correct sample 3 counts for nothing
    analysis = Analysis(
        "shap", {"conv": [0.1, 0.2]}, scores.layers, None,
        meta={"errors": scores.errors, "errors_driven": scores.driven},
    )  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=160).print(analysis)
    row = next(line for line in out.getvalue().splitlines() if " conv " in line)
    assert "2/3" in row


class _Embedded(nn.Module):
    """Inputs looked up in an Embedding: no gradient reaches the input features' gates."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.hidden = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        looked_up = self.embed(x.long().clamp(0, 9)).mean(1)
        return self.out(self.hidden(looked_up).relu())


def test_gates_the_output_has_no_gradient_through_score_zero_not_an_error() -> None:
    torch.manual_seed(0)
    x, y = torch.rand(16, 4) * 10, torch.arange(16) % 3
    scores = score("shap", _Embedded().eval(), x, y, background=4, nsamples=4)
    assert scores.features is not None and not scores.features.any()  # no gradient: 0
    assert scores.channels["hidden"].any()  # the gates it reaches are scored as before
