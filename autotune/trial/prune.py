"""Structural pruning and input-feature dropping: channels, heads, a transformer's width and
input columns really removed.

Pruning goes through torch-pruning's dependency graph, so everything coupled to a removed
channel (the BatchNorm after it, the next layer's inputs, every member of a residual sum or a
concatenation) loses the same channel. Which channels go is decided by our importance scores,
plugged in as a ``tp.importance.Importance``: the lowest-scored channels go first.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from autotune.load.anatomy import classifier_of, device_of, out_channels
from autotune.rank.heads import is_attention
from autotune.rank.width import remove_width
from autotune.trial.heads import lowest, prune_heads

# A depthwise conv's channels go through its own handler: without it, a depthwise layer's
# removed channels were neither scored nor recorded.
_OUT_CHANNELS = (
    tp.prune_conv_out_channels,
    tp.prune_linear_out_channels,
    tp.prune_depthwise_conv_out_channels,
)


class RankedImportance(tp.importance.Importance):
    """A group's channel scores: the mean of its members' scores from an analysis.

    Members of one group (a residual stream, say) are removed together, so each member's score
    for a channel counts; the mean keeps groups of different sizes comparable.
    """

    def __init__(self, scores: Mapping[str, np.ndarray], names: Mapping[nn.Module, str]) -> None:
        self.scores = scores
        self.names = names

    @torch.no_grad()
    def __call__(self, group: tp.dependency.Group) -> torch.Tensor:
        size = len(group[0].idxs)
        total = torch.zeros(size)
        count = torch.zeros(size)
        for i, (dep, idxs) in enumerate(group):
            name = self.names.get(dep.target.module)
            if dep.handler not in _OUT_CHANNELS or name is None or name not in self.scores:
                continue
            root = torch.tensor([int(r) for r in group[i].root_idxs])
            values = torch.as_tensor(self.scores[name], dtype=torch.float32)[_plain(idxs)]
            total.scatter_add_(0, root, values)
            count.scatter_add_(0, root, torch.ones_like(values))
        return total / count.clamp(min=1)


def prune(
    model: nn.Module,
    scores: Mapping[str, np.ndarray],
    example: torch.Tensor,
    ratio: float = 0.0,
    per_layer: Mapping[str, float] | None = None,
    global_ranking: bool = False,
) -> dict[str, list[int]]:
    """Remove the lowest-scored channels of ``model`` in place; returns layer -> kept channels.

    ``ratio`` is the fraction of channels removed from every scored layer, or with
    ``global_ranking`` the fraction of all scored channels, the lowest across the model;
    ``per_layer`` overrides it for the layers it names. Layers without scores and the
    classifier are kept; no layer loses more than 95% of its channels. Scores of an attention
    module rank its heads: the same fractions of them go, whole, and at least one stays.
    When it prunes, every parameter requires grad afterwards: the caller sets what trains.
    """
    per_layer = dict(per_layer or {})
    if not scores or (ratio <= 0 and not any(r > 0 for r in per_layer.values())):
        return {}
    unknown = set(per_layer) - set(scores)
    if unknown:
        raise ValueError(f"no scores for layers {sorted(unknown)}; scored: {sorted(scores)}")
    # torch-pruning finds which channels (and heads' rows) are coupled by tracing autograd: a
    # frozen layer (an adapted model keeps its parent's frozen layers) would drop out of the
    # trace, and a depthwise conv then lose channels that the layer feeding it keeps. The
    # caller sets what trains after pruning (``trial.freeze.configure``).
    for param in model.parameters():
        param.requires_grad_(True)
    # Attention modules' scores rank their heads, which go whole (``trial.heads``).
    modules = dict(model.named_modules())
    heads = {n: s for n, s in scores.items() if is_attention(modules[n])}
    channels = {n: s for n, s in scores.items() if n not in heads}
    with warnings.catch_warnings():
        # torch-pruning warns about the parameters it cannot prune (a position embedding, a
        # layer scale): the layers around them are never pruned (see ``rank.placement``).
        warnings.simplefilter("ignore")
        per_channel = {n: r for n, r in per_layer.items() if n in channels}
        kept = (
            _prune(model, channels, example, ratio, per_channel, global_ranking) if channels else {}
        )
    per_head = {n: r for n, r in per_layer.items() if n in heads}
    return kept | prune_heads(model, heads, example, ratio, per_head, global_ranking)


def _prune(
    model: nn.Module,
    scores: Mapping[str, np.ndarray],
    example: torch.Tensor,
    ratio: float,
    per_layer: dict[str, float],
    global_ranking: bool,
) -> dict[str, list[int]]:
    names = {m: n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    _, classifier = classifier_of(model)
    ignored = [
        m
        for m in model.modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and names[m] not in scores
    ]
    ignored.append(classifier)
    sizes = {name: out_channels(modules[name]) for name in scores}
    pruner = tp.pruner.BasePruner(
        model,
        example,
        importance=RankedImportance(scores, names),
        pruning_ratio=ratio,
        pruning_ratio_dict={modules[n]: r for n, r in per_layer.items()},
        ignored_layers=ignored,
        global_pruning=global_ranking,
        # Never empty a layer, whatever the ratio asked.
        max_pruning_ratio=0.95,
    )
    removed: dict[str, set[int]] = {}
    for group in pruner.step(interactive=True):
        for dep, idxs in group:
            name = names.get(dep.target.module)
            if dep.handler in _OUT_CHANNELS and name in sizes:
                removed.setdefault(name, set()).update(_plain(idxs))
        group.prune()
    return {
        name: [c for c in range(size) if c not in removed.get(name, set())]
        for name, size in sizes.items()
    }


def prune_width(
    model: nn.Module, scores: Mapping[str, np.ndarray], example: torch.Tensor, ratio: float
) -> dict[str, list[int]]:
    """Remove the lowest-scored ``ratio`` of each residual stream's channels in place
    (``scores``: the stream's first writer -> one score per channel, ``rank.width``); returns
    stream -> the channels kept, for the streams that lost some. Its own pass: ``prune`` leaves
    the stream's writers out (an unscored layer is ignored, and torch-pruning then skips every
    group it is in)."""
    kept = {}
    for root, row in scores.items():
        dropped = lowest(row, ratio)
        if not dropped:
            continue  # a ratio under half a channel
        for param in model.parameters():
            param.requires_grad_(True)  # traced through autograd, as in ``prune``
        remove_width(model, root, sorted(dropped), example)
        kept[root] = [c for c in range(len(row)) if c not in set(dropped)]
    return kept


def input_layer(model: nn.Module, example: torch.Tensor) -> tuple[str, nn.Module]:
    """The module that receives the model's input tensor itself."""
    example = example.to(device_of(model))
    found: list[tuple[str, nn.Module]] = []

    def spot(name: str):
        def hook(module: nn.Module, args: tuple[object, ...]) -> None:
            if not found and args and args[0] is example:
                found.append((name, module))

        return hook

    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    handles = [m.register_forward_pre_hook(spot(n)) for n, m in leaves]
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            model(example)
            model.train(was)
    finally:
        for handle in handles:
            handle.remove()
    if not found:
        raise ValueError("no module receives the model's input directly")
    return found[0]


def feature_layer(model: nn.Module, example: torch.Tensor) -> nn.Linear:
    """The ``nn.Linear`` that takes the input features; ValueError when there is none."""
    name, layer = input_layer(model, example)
    if not isinstance(layer, nn.Linear):
        raise ValueError(
            f"dropping input features needs a model whose input goes straight into an nn.Linear; "
            f"here it goes into {name!r} ({type(layer).__name__})"
        )
    return layer


def drop_features(model: nn.Module, keep: list[int], example: torch.Tensor) -> None:
    """Keep only input columns ``keep``: the first Linear layer loses the others' weights."""
    layer = feature_layer(model, example)
    with torch.no_grad():
        layer.weight = nn.Parameter(layer.weight[:, keep].clone())
    layer.in_features = len(keep)


def _plain(idxs: object) -> list[int]:
    return [int(getattr(i, "idx", i)) for i in idxs]  # type: ignore[attr-defined]
