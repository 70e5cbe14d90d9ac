"""Unit importances: how much each channel, neuron, layer and input feature matters.

Every method scores the same thing: what removing a unit does to the model's evidence for the
true class (its log-probability). A unit is an output channel of a Conv layer or a neuron of a
Linear layer, taken after the normalisation that follows it (so zeroing it is exactly what
structural pruning does to the next layer), an attention head (``rank.heads``), a channel of a
transformer's residual stream (``rank.width``), or an input feature of a feature-vector model.

A multiplicative gate sits on every unit: 1 keeps it, 0 removes it. The methods:

- ``shap``: expected gradients (``shap.GradientExplainer``'s algorithm, batched in
  ``rank.expected_gradients``) explain the true-class
  log-probability of each sample with the gates as its inputs. The background is a set of
  random coalitions, each keeping a fraction q ~ U(0, 1) of the units: uniform coalition sizes
  are the Shapley value's own weighting, so a unit's attribution averages its marginal effect
  over which other units are present (a Shapley value of the "keep these units" game, sampled
  along expected-gradient paths). All layers are explained in one pass.
- ``taylor``: the gate gradient at "everything kept" (activation x gradient), one pass.
- ``l1``: the L1 norm of each unit's weights; no data, no layer scores.
- ``random``: seeded uniform scores, the control.

Per sample, a unit's attribution ``phi`` is in nats of log-probability. A unit's importance is
``mean |phi|`` over the samples. A layer's error score is the evidence its units give against
the true class on the samples the model gets wrong, ``mean over errors of sum(max(-phi, 0))``:
the unfreezing order. The layer whose units give the most such evidence on a mistake "drives"
it: ``autotune analyze`` counts the mistakes each layer drives.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np
import torch
from torch import nn

from autotune.config import EXPLAINERS, Method
from autotune.load.anatomy import layers
from autotune.rank.expected_gradients import expected_gradients
from autotune.rank.gates import Gated, Site, sites
from autotune.rank.heads import parts

METHODS: tuple[str, ...] = get_args(Method)
"""The importance methods (``--method``, a space's ``importance``): the one list of them."""
ERROR_METHODS = ("shap", "taylor")
"""The methods that also rank layers by the mistakes they drive, so can order the unfreezing
(a space's ``unfreeze_order``); ``l1`` and ``random`` see no data."""


@dataclass
class Scores:
    """What one method found: per-layer unit importances, layer error scores, feature scores."""

    channels: dict[str, np.ndarray]
    """Prunable layer -> one importance per output channel or neuron."""
    layers: dict[str, float] | None
    """Layer -> error score (higher: drives more of the mistakes); None for ``l1``."""
    features: np.ndarray | None
    """One importance per input feature, for feature-vector models."""
    errors: int
    """How many explained samples the model got wrong (the error score's basis)."""
    driven: dict[str, int] | None = None
    """Layer -> how many of those mistakes it drives: the samples on which its units give more
    evidence against the true class than any other layer's (they sum to ``errors``)."""
    unpruned: dict[str, str] = field(default_factory=dict)
    """Layers left unpruned -> the unsupported module kinds their channels pass through."""
    width: dict[str, np.ndarray] = field(default_factory=dict)
    """A transformer's residual stream (named by its first writer) -> one importance per
    channel (``rank.width``)."""


def score(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    background: int = 32,
    nsamples: int = 16,
    keep: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    explainer: str = "gradient",
    device: torch.device | str = "cpu",
) -> Scores:
    """Score ``model``'s units with ``method`` on samples ``x`` (labels ``y``).

    ``model`` is never changed: the gates go on a deep copy. Expected gradients run their
    batches on ``device`` (the random draws are made on the CPU either way, so the rankings
    are the same up to the device's float rounding); everything else runs on the CPU.
    """
    if method not in METHODS:
        raise ValueError(f"unknown importance method {method!r}: use one of {list(METHODS)}")
    if explainer not in EXPLAINERS:
        raise ValueError(f"unknown explainer {explainer!r}: use one of {list(EXPLAINERS)}")
    # On the CPU, whatever device the model is on: seeded, so every worker gets the same ranks.
    with torch.no_grad():
        copied = copy.deepcopy(model).cpu().eval()
    x, y = x.cpu(), y.cpu()
    for p in copied.parameters():
        p.requires_grad_(False)
    found = sites(copied, x)
    # A layer whose channels are a residual stream's loses them with the stream's width.
    covered = {layer for s in found for layer in s.covers}
    unpruned = {s.layer: s.unsupported for s in found if s.unsupported and s.layer not in covered}
    features = x.ndim == 2
    if method == "l1":
        return dataclasses.replace(_l1(copied, found, features), unpruned=unpruned)
    if method == "random":
        return dataclasses.replace(_random(copied, found, x, seed), unpruned=unpruned)
    gated = Gated(copied, found, features)
    phis = (
        _shap(gated, x, y, background, nsamples, keep, seed, explainer, torch.device(device))
        if method == "shap"
        else _taylor(gated, x, y)
    )
    with torch.no_grad():
        wrong = (copied(x).argmax(1) != y).numpy()
    return dataclasses.replace(_summarise(found, phis, wrong, features), unpruned=unpruned)


def _shap(
    gated: Gated,
    x: torch.Tensor,
    y: torch.Tensor,
    background: int,
    nsamples: int,
    keep: tuple[float, float],
    seed: int,
    kind: str = "gradient",
    device: torch.device = torch.device("cpu"),
) -> list[np.ndarray]:
    gated.bind(x[:1], y[:1])
    sizes = gated.gate_sizes()
    coalitions = _coalitions(sizes, background, keep, seed)
    if kind == "gradient":
        # Always on a copy (also on the CPU, so the one path is the tested one).
        return expected_gradients(
            gated.on(device), x.to(device), y.to(device), coalitions, nsamples, seed
        )
    import shap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer = shap.DeepExplainer(gated, coalitions)
        everything = [torch.ones(1, n) for n in sizes]
        rows: list[list[np.ndarray]] = [[] for _ in sizes]
        for j in range(len(x)):
            gated.bind(x[j : j + 1], y[j : j + 1])
            values = _deep_values(explainer, everything)
            values = values if isinstance(values, list) else [values]
            for i, v in enumerate(values):
                rows[i].append(np.asarray(v).reshape(-1))
    return [np.stack(r) for r in rows]


def _deep_values(explainer: Any, everything: list[torch.Tensor]) -> Any:
    try:
        # DeepLIFT's rescale rule does not sum exactly through the gate products.
        return explainer.shap_values(everything, check_additivity=False)
    except RuntimeError as e:
        raise ValueError(
            f"shap's DeepExplainer failed on this model ({str(e).splitlines()[0][:120]}); it "
            "breaks on in-place operations such as nn.ReLU(inplace=True): use the default "
            "explainer 'gradient'"
        ) from e


def _coalitions(
    sizes: list[int], background: int, keep: tuple[float, float], seed: int
) -> list[torch.Tensor]:
    """Background masks: coalition b keeps a fraction q_b ~ U(keep) of every layer's units.

    Which units each coalition drops cycles through a random permutation, so every unit is
    dropped about equally often. (Independent draws leave some units kept in every coalition:
    expected gradients then give them exactly zero attribution, and they would be pruned first.)
    """
    gen = torch.Generator().manual_seed(seed)
    q = keep[0] + (keep[1] - keep[0]) * torch.rand(background, generator=gen)
    masks = []
    for n in sizes:
        order = torch.randperm(n, generator=gen)
        mask = torch.ones(background, n)
        start = 0
        for b in range(background):
            dropped = round(float(1 - q[b]) * n)
            mask[b, order[(start + torch.arange(dropped)) % n]] = 0
            start += dropped
        masks.append(mask)
    return masks


def _taylor(gated: Gated, x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> list[np.ndarray]:
    sizes = None
    rows: list[list[np.ndarray]] = []
    for start in range(0, len(x), batch):
        gated.bind(x[start : start + batch], y[start : start + batch])
        sizes = sizes or gated.gate_sizes()
        gates = [torch.ones(len(gated.x), n, requires_grad=True) for n in sizes]
        grads = torch.autograd.grad(gated(*gates).sum(), gates)
        rows = rows or [[] for _ in sizes]
        for i, g in enumerate(grads):
            # Removing a unit moves its gate from 1 to 0: first order, the change is -grad.
            rows[i].append(g.numpy())
    return [np.concatenate(r) for r in rows]


def _summarise(
    found: list[Site], phis: list[np.ndarray], wrong: np.ndarray, features: bool
) -> Scores:
    feature_scores = np.abs(phis[0]).mean(0) if features else None
    per_site = phis[1:] if features else phis
    # With no mistakes to explain, the least confident quarter of the samples stands in.
    importance = {
        site: np.abs(phi).mean(0)
        for site, phi in zip(found, per_site, strict=True)
        if site.prunable
    }
    channels = {site.layer: v for site, v in importance.items() if not site.width}
    width = {site.layer: v for site, v in importance.items() if site.width}
    # Heads and widths rank units within their attention module or stream; the layers' scores
    # come from the layers (the module's qkv and proj, the stream's writers have their own gates).
    layered = [
        (site, phi)
        for site, phi in zip(found, per_site, strict=True)
        if not (site.heads or site.width)
    ]
    basis = wrong if wrong.sum() else _least_confident([phi for _, phi in layered], len(wrong))
    layer_scores = {
        site.layer: float(np.clip(-phi[basis], 0, None).sum(1).mean()) for site, phi in layered
    }
    driven = None
    if wrong.sum() and layered:
        against = np.stack([np.clip(-phi[wrong], 0, None).sum(1) for _, phi in layered])
        counts = np.bincount(against.argmax(0), minlength=len(layered))
        driven = {site.layer: int(c) for (site, _), c in zip(layered, counts, strict=True)}
    return Scores(channels, layer_scores, feature_scores, int(wrong.sum()), driven, width=width)


def _least_confident(per_site: list[np.ndarray], n: int) -> np.ndarray:
    total = sum(phi.sum(1) for phi in per_site)
    chosen = np.zeros(n, dtype=bool)
    chosen[np.argsort(total)[: max(1, n // 4)]] = True
    return chosen


def _l1(model: nn.Module, found: list[Site], features: bool) -> Scores:
    named = dict(model.named_modules())
    channels: dict[str, np.ndarray] = {}
    width: dict[str, np.ndarray] = {}
    for site in found:
        if site.prunable and site.heads:
            channels[site.layer] = _head_l1(named[site.layer], site.channels)
        elif site.prunable:
            # A stream's channels by its first writer's weights, as a layer's by its own.
            weight = named[site.layer].weight.detach()
            scores = weight.abs().flatten(1).sum(1).numpy()
            (width if site.width else channels)[site.layer] = scores
    feature_scores = None
    if features:
        first = _first_linear(model)
        feature_scores = first.weight.detach().abs().sum(0).numpy() if first is not None else None
    return Scores(channels, None, feature_scores, 0, width=width)


def _head_l1(attention: nn.Module, heads: int) -> np.ndarray:
    """Per head, the L1 norm of its q, k and v rows of ``qkv`` and its columns of ``proj``."""
    qkv_layer, proj_layer, _ = parts(attention)
    qkv, proj = qkv_layer.weight.detach().abs(), proj_layer.weight.detach().abs()
    rows = qkv.reshape(3, heads, -1, qkv.shape[1]).sum((0, 2, 3))
    return (rows + proj.reshape(proj.shape[0], heads, -1).sum((0, 2))).numpy()


def _random(model: nn.Module, found: list[Site], x: torch.Tensor, seed: int) -> Scores:
    rng = np.random.default_rng(seed)
    drawn = {s: rng.random(s.channels) for s in found if s.prunable}
    layer_scores = {unit.name: float(rng.random()) for unit in layers(model)}
    feature_scores = rng.random(x.shape[1]) if x.ndim == 2 else None
    channels = {s.layer: v for s, v in drawn.items() if not s.width}
    width = {s.layer: v for s, v in drawn.items() if s.width}
    return Scores(channels, layer_scores, feature_scores, 0, width=width)


def _first_linear(model: nn.Module) -> nn.Linear | None:
    return next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
