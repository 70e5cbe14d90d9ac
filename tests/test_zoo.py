"""Common vision architectures, with random weights and tiny inputs: gates land where pruning
cuts, the analysis leaves the model as it was, pruning equals gating the same channels to zero,
and (for a representative subset) a short vision search slims them and exports a program that
loads in a clean process."""

from __future__ import annotations

import copy
import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from conftest import assert_program_matches, gated_log_probs, randomise_norms
from optuna.trial import TrialState
from rich.console import Console
from torch import nn

from autotune import search
from autotune.load.attention import SelfAttention, split_attention
from autotune.load.tasks import from_tensors
from autotune.rank.gates import sites
from autotune.rank.methods import score
from autotune.trial.prune import prune

models = torchvision.models


class Attention(nn.Module):
    """timm's ``Attention`` (1.0): one qkv projection split into heads, then an output
    projection; the shapes come from ``num_heads``, ``head_dim`` and ``attn_dim``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.head_dim = dim // heads
        self.attn_dim = heads * self.head_dim
        self.qkv = nn.Linear(dim, self.attn_dim * 3)
        self.proj = nn.Linear(self.attn_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, self.attn_dim))


class Block(nn.Module):
    """timm's pre-norm transformer block."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TimmStyleViT(nn.Module):
    """A small timm-style vision transformer: patch embedding, class token, position embedding,
    pre-norm blocks, a final LayerNorm and a linear head."""

    def __init__(self, num_classes: int = 4, dim: int = 32, patch: int = 8) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + (32 // patch) ** 2, dim) * 0.02)
        self.blocks = nn.Sequential(Block(dim, 4), Block(dim, 4))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def _small_vit() -> nn.Module:
    return models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
        num_classes=4,
    )  # fmt: skip


ZOO: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: models.resnet18(num_classes=4),
    "mobilenet_v3_small": lambda: models.mobilenet_v3_small(num_classes=4),
    "efficientnet_b0": lambda: models.efficientnet_b0(num_classes=4),
    "densenet121": lambda: models.densenet121(num_classes=4),
    "regnet_x_400mf": lambda: models.regnet_x_400mf(num_classes=4),
    "convnext_tiny": lambda: models.convnext_tiny(num_classes=4),
    "vit_b_16": lambda: models.vit_b_16(image_size=32, num_classes=4),
    "vit_small": _small_vit,
    "timm_style_vit": TimmStyleViT,
}

# What each architecture must have pruned, by kind: the units the issue named.
PRUNED = {
    "mobilenet_v3_small": ["features.1.block.0.0"],  # a depthwise conv
    "efficientnet_b0": ["features.1.0.block.1.fc1"],  # a squeeze-and-excitation squeeze
    "densenet121": ["features.denseblock1.denselayer1.conv2"],  # pre-norm, concatenated
    "regnet_x_400mf": ["trunk_output.block1.block1-0.f.b.0"],  # a grouped conv
    "convnext_tiny": ["features.1.0.block.3"],  # MLP hidden units
    "vit_b_16": ["encoder.layers.encoder_layer_0.mlp.0"],
    "vit_small": ["encoder.layers.encoder_layer_0.mlp.0"],
    "timm_style_vit": ["blocks.0.mlp.0"],
}
# ... and what is left unpruned, with the reason the analysis gives.
UNPRUNED = {
    "convnext_tiny": ("features.1.0.block.0", "LayerNorm"),  # its stream is read by dwconvs
}
# The transformers' residual streams, pruned as their width (``rank.width``): their first
# writer (whose channels alone are unprunable for the LayerNorms) and their channels.
WIDTH = {
    "vit_b_16": ("conv_proj", 768),
    "vit_small": ("conv_proj", 32),
    "timm_style_vit": ("patch_embed", 32),
}
LIGHT = ["resnet18", "mobilenet_v3_small", "vit_small", "timm_style_vit"]


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = ZOO[name]().eval()
    gen = randomise_norms(model)
    for name, p in model.named_parameters():
        if name.endswith("layer_scale"):  # ConvNeXt starts its blocks at 1e-6 of the stream
            p.data.fill_(1.0)
        elif not p.any():  # torchvision's ViT starts with a zero head: every output the same
            p.data.normal_(0, 0.05, generator=gen)
    return model


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[] if n in LIGHT else pytest.mark.slow) for n in ZOO]
)
def test_pruning_equals_gating_and_the_analysis_leaves_the_model_as_it_was(name: str) -> None:
    model = _build(name)
    x = torch.randn(3, 3, 32, 32)
    split_attention(model, x)  # as a search does when it loads the model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch-pruning's warnings never reach the user
        scores = score("shap", model, x, torch.arange(3), background=4, nsamples=2)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    found = sites(model, x)
    layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    # Every conv and linear layer the forward pass calls as a module gets a gate.
    assert {s.layer for s in found if not s.heads and not s.width} == layers
    # Each attention module's heads get gates and scores, one per head: timm-style ones and
    # torchvision's nn.MultiheadAttention, split into qkv and proj (``load.attention``).
    kinds = (Attention, SelfAttention)
    attention = {n: m.num_heads for n, m in model.named_modules() if isinstance(m, kinds)}
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    if name.startswith("vit_"):
        assert len(attention) == {"vit_small": 2, "vit_b_16": 12}[name]
    assert {s.layer: s.channels for s in found if s.heads} == attention
    assert {n: len(scores.channels[n]) for n in attention} == attention
    assert set(PRUNED.get(name, [])) <= set(scores.channels)
    if name in UNPRUNED:
        layer, reason = UNPRUNED[name]
        site = next(s for s in found if s.layer == layer)
        assert not site.prunable and reason in str(site.unsupported).split(", ")
        assert layer not in scores.channels
    # A transformer's width is ranked, one score per channel of its stream; its writers are
    # not listed as unpruned (they lose the stream's channels), and a conv net has none.
    assert {s.layer: s.channels for s in found if s.width} == dict(
        [WIDTH[name]] if name in WIDTH else []
    )
    assert {k: len(v) for k, v in scores.width.items()} == dict(
        [WIDTH[name]] if name in WIDTH else []
    )
    if name in WIDTH:
        root = WIDTH[name][0]
        assert not next(s for s in found if s.layer == root).prunable  # alone, it is not
        assert root not in scores.channels and root not in scores.unpruned
    pruned = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = prune(pruned, scores.channels, x[:2], 0.5)
    named = dict(pruned.named_modules())
    for layer, channels in kept.items():
        # Kept channels are recorded as the layer really has them (depthwise included).
        units = named[layer].num_heads if layer in attention else named[layer].weight.shape[0]
        assert len(channels) == units
    # Half the heads go, whole: the head width stays.
    for layer, heads in attention.items():
        kept_heads = named[layer].num_heads
        assert kept_heads == heads // 2 and len(kept[layer]) == kept_heads
        assert named[layer].proj.in_features == kept_heads * named[layer].head_dim
    for layer in PRUNED.get(name, []):
        assert named[layer].weight.shape[0] < dict(model.named_modules())[layer].weight.shape[0]
    assert _params(pruned) < _params(model)
    with torch.no_grad():
        got = torch.log_softmax(pruned.eval()(x), 1)[:, 0]
        original = torch.log_softmax(model(x), 1)[:, 0]
    # Structural pruning removes exactly what gating those channels to zero removes.
    torch.testing.assert_close(got, gated_log_probs(model, found, kept, x), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, original, atol=1e-4)


def _vision_space() -> dict:
    space = yaml.safe_load((Path(__file__).parents[1] / "search_spaces/vision.yaml").read_text())
    space.update(
        batch_size=8,
        # Enough pruning that the child is trained: one keeping 95% of its parent is refused.
        prune={"low": 0.2, "high": 0.7},
        prune_width={"low": 0.25, "high": 0.5},  # each child narrower where it has a width
        analysis={"samples": 8, "background": 4, "nsamples": 2},
        fit={"max_epochs": 1, "patience": 1},
    )
    return space


SEARCHED = (
    list(ZOO)
    if os.environ.get("AUTOTUNE_ZOO_SEARCH") == "all"
    else ["mobilenet_v3_small", "vit_small", "timm_style_vit"]
)
"""The models a full search runs on: a subset keeps the suite short; ``AUTOTUNE_ZOO_SEARCH=all``
runs every model of the zoo (several minutes on 2 cores)."""


@pytest.mark.slow
@pytest.mark.parametrize("name", SEARCHED)
def test_a_vision_search_slims_the_model_and_its_program_loads_in_a_clean_process(
    name: str, tmp_path: Path
) -> None:
    model = _build(name)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, 32, 32, generator=gen)
    y = torch.arange(40) % 4
    data = from_tensors(
        x[:24], y[:24], x_val=x[24:32], y_val=y[24:32], x_test=x[32:], y_test=y[32:]
    )
    console = Console(file=io.StringIO(), width=200)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = search(model, data, space=_vision_space(), trials=3, out=tmp_path, console=console)
    assert not [w for w in caught if "torch_pruning" in w.filename or "Unwrapped" in str(w.message)]
    # What is left unpruned is said once, with the reason, never as a failed trial.
    said = console.file.getvalue()  # type: ignore[attr-defined]
    assert said.count("left unpruned:") == (name in UNPRUNED)
    if name in UNPRUNED:
        flat = " ".join(said.split())
        note = flat[flat.index("left unpruned:") : flat.index("in the README")]
        assert UNPRUNED[name][0] in note and UNPRUNED[name][1] in note, note
        # The layers of an attention module whose heads are pruned whole are not among them.
        assert ".qkv" not in note and "attention" not in note, note
    trials = result.study.trials[1:]
    assert len(trials) == 3
    assert all(t.state != TrialState.FAIL for t in trials), [t.user_attrs for t in trials]
    slimmed = [t for t in trials if t.user_attrs["total_params"] < _params(model)]
    assert slimmed and all(t.state == TrialState.COMPLETE for t in slimmed)
    kinds = (Attention, nn.MultiheadAttention)  # the search splits the latter (load.attention)
    heads = {n: m.num_heads for n, m in model.named_modules() if isinstance(m, kinds)}
    ranked = f"the heads of {len(heads)} attention modules" in " ".join(said.split())
    assert ranked == bool(heads)  # the analysis line counts them apart from the layers
    assert ("the width of 1 residual stream," in " ".join(said.split())) == (name in WIDTH)
    if heads:  # whole heads went in the trials that pruned, never a module's last one
        kept = [t.user_attrs["heads_kept"] for t in trials if "heads_kept" in t.user_attrs]
        assert any(k[n] < heads[n] for k in kept for n in heads)
        # Every module named, even one pruned to its last head.
        assert all(k.keys() == heads.keys() and min(k.values()) >= 1 for k in kept)
    if name in WIDTH:  # the width went too: in every trial that sampled it, by its fraction
        root, channels = WIDTH[name]
        widths = [t for t in trials if "prune_width" in t.params]
        assert widths
        for t in widths:
            removed = int(t.params["prune_width"] * channels + 0.5)
            assert t.user_attrs["width_kept"] == {root: channels - removed}, t.params
    config = yaml.safe_load((tmp_path / "best" / "config.yaml").read_text())
    exported = result.study.trials[config["trial"]].user_attrs.get("width_kept", {})
    assert {k: v["kept"] for k, v in config["structure"]["width"].items()} == exported
    # The exported best model: a program that loads without autotune or the model's code.
    with torch.no_grad():
        assert_program_matches(tmp_path / "best" / "model.pt2", x[32:], result.best_model(x[32:]))
