"""Where a layer's gate goes so that closing it removes exactly what pruning removes.

Read off torch-pruning's dependency graph, which follows the data through the functional
operations (additions, concatenations, reshapes) that module hooks cannot see:

- post-norm (conv -> BatchNorm -> ReLU): the gate goes on the BatchNorm's output, since
  pruning removes the channel from the BatchNorm too;
- pre-norm (DenseNet: a conv's output is concatenated and normalised by every later layer):
  the gate goes on each of those BatchNorms' outputs, at the positions the layer's channels
  hold there, since a BatchNorm maps a zero input to a constant that pruning would remove;
- no normalisation (an MLP's hidden units, a squeeze-and-excitation's squeeze): the layer's
  own output.

A layer is prunable only when every member of its pruning group is a kind whose removal equals
a zero gate: Conv (grouped and depthwise included), Linear, BatchNorm, and the per-channel
operations between them (activations, pooling, additions, products, concatenations, reshapes).
Anything else (LayerNorm and GroupNorm mix channels; attention mixes positions; a bare
``nn.Parameter`` such as a position embedding or a layer scale) leaves the whole group unpruned,
with a reason.
"""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

_OPS = tp.ops.OPTYPE
_WEIGHTED = {_OPS.CONV, _OPS.DEPTHWISE_CONV, _OPS.LINEAR}
_PLUMBING = {_OPS.CONCAT, _OPS.SPLIT, _OPS.RESHAPE, _OPS.EXPAND, _OPS.UNBIND, _OPS.SLICE}
# Operations that act on each channel apart: a zero channel stays zero, or only feeds a
# product with a zero channel (a squeeze-and-excitation's sigmoid), so removing it is exact.
# Addmm is an nn.Linear applied to a sequence (ConvNeXt's and ViT's MLPs); the matrix products
# of attention (Mm, Bmm, scaled dot product) mix channels and are not listed.
_PER_CHANNEL = re.compile(
    r"(Addmm|Add|Sub|Mul|Div|Neg|Relu|Relu6|LeakyRelu|Elu|Gelu|Silu|Hardswish|Hardsigmoid|Sigmoid|"
    r"Tanh|Hardtanh|Clamp|Clone|Mean|Sum|AvgPool\dD|AdaptiveAvgPool\dD|MaxPool\dDWithIndices|"
    r"MaxPool\dD|AdaptiveMaxPool\dD|Permute|Transpose|T|View|UnsafeView|Reshape|Flatten|"
    r"Squeeze|Unsqueeze|Cat|Split|SplitWithSizes|Select|Slice|Expand|Unbind|NativeDropout|"
    r"Dropout)Backward\d*"
)
_ATTENTION = re.compile(r"(Mm|Bmm|Baddbmm|Softmax|ScaledDotProduct)")
_FUNCTIONAL = {"NativeLayerNorm": "LayerNorm", "NativeGroupNorm": "GroupNorm"}
_KINDS = {
    _OPS.LN: "LayerNorm",
    _OPS.GN: "GroupNorm",
    _OPS.IN: "InstanceNorm",
    _OPS.MHA: "nn.MultiheadAttention",
    _OPS.PARAMETER: "a bare nn.Parameter",
    _OPS.EMBED: "an embedding",
    _OPS.LSTM: "an LSTM",
    _OPS.PRELU: "PReLU",
    _OPS.CUSTOMIZED: "a custom module",
}


@dataclass(frozen=True)
class Point:
    """One place a gate multiplies: a module's output, at some of its channels."""

    module: str
    channel_dim: int
    positions: tuple[int, ...] | None
    """Where the layer's channels 0..n-1 sit along ``channel_dim``; None: all, in order."""
    width: int = 1
    """Consecutive channels each gate covers (an attention head's slice)."""
    before: bool = False
    """Gate the module's input rather than its output (the heads entering ``proj``)."""
    norm: bool = False
    """The module is a LayerNorm whose statistics the gate masks too (a transformer's width:
    ``rank.width``)."""


@dataclass(frozen=True)
class Placement:
    points: tuple[Point, ...]
    unsupported: str | None
    """Why the layer cannot be pruned: the module kinds its channels pass through, or None."""


def placements(
    model: nn.Module, example: torch.Tensor, layer_names: list[str]
) -> dict[str, Placement]:
    """Where the gates of ``layer_names`` (Conv/Linear modules of ``model``) go."""
    traced = copy.deepcopy(model).eval()
    for p in traced.parameters():
        p.requires_grad_(True)  # the graph is traced through autograd
    modules = dict(traced.named_modules())
    try:
        with warnings.catch_warnings(), torch.enable_grad():
            # torch-pruning warns about each parameter it cannot prune: the reason is ours to give.
            warnings.simplefilter("ignore")
            graph = tp.DependencyGraph().build_dependency(traced, example_inputs=example[:2])
    except Exception as e:  # a model torch-pruning cannot trace is scored, never pruned
        why = f"a graph torch-pruning cannot trace ({type(e).__name__})"
        return {n: Placement((Point(n, _channel_dim(modules[n]), None),), why) for n in layer_names}
    names = {m: n for n, m in traced.named_modules()}
    found = {}
    for name in layer_names:
        layer = modules[name]
        if layer not in graph.module2node:
            found[name] = Placement((), "not on the traced path")
            continue
        found[name] = _place(graph, names, layer, name)
    return found


def _place(
    graph: tp.DependencyGraph, names: dict[nn.Module, str], layer: nn.Module, name: str
) -> Placement:
    channels = int(graph.get_out_channels(layer))
    own = Point(name, _channel_dim(layer), None)
    pruner = graph.get_pruner_of_module(layer)
    group = graph.get_pruning_group(layer, pruner.prune_out_channels, list(range(channels)))
    why = _unsupported(group)
    if why is not None:
        return Placement((own,), why)
    norms = {}
    for i, (dep, idxs) in enumerate(group):
        if dep.target.type == _OPS.BN:
            pos = list(range(channels))
            for target, root in zip(idxs, group[i].root_idxs, strict=True):
                pos[int(root)] = int(getattr(target, "idx", target))
            norms[dep.target] = tuple(pos)
    start = graph.module2node[layer]
    points = []
    if _reaches_a_layer(start, norms):
        points.append(own)
    reached = _reached_norms(start)
    for node in reached:
        if node not in norms:
            return Placement((own,), f"{names.get(node.module)!r} (unmapped)")
        if _reaches_a_layer(node, norms):
            points.append(Point(names[node.module], 1, norms[node]))
    return Placement(tuple(points) or (own,), None)


def _channel_dim(layer: nn.Module) -> int:
    return 1 if isinstance(layer, nn.modules.conv._ConvNd) else -1


def _unsupported(group: tp.dependency.Group) -> str | None:
    kinds: set[str] = set()
    for dep, _ in group:
        node = dep.target
        if node.type in _WEIGHTED or node.type == _OPS.BN or node.type in _PLUMBING:
            continue
        if node.type == _OPS.ELEMENTWISE:
            op = re.sub(r"Backward\d*$", "", type(node.grad_fn).__name__)
            if not _PER_CHANNEL.fullmatch(f"{op}Backward0"):
                kinds.add(_FUNCTIONAL.get(op, "attention" if _ATTENTION.match(op) else op))
            continue
        kinds.add(_KINDS.get(node.type, node.type.name))
    return ", ".join(sorted(kinds)) or None


def _successors(node: tp.dependency.Node) -> list[tp.dependency.Node]:
    return list(dict.fromkeys(node.outputs))


def _reaches_a_layer(start: tp.dependency.Node, norms: dict) -> bool:
    """Whether some path from ``start`` meets a weighted layer or the output before a norm."""
    seen = set()
    stack = _successors(start)
    if not stack:
        return True  # the model's output
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.type in _WEIGHTED:
            return True
        if node.type == _OPS.BN:
            continue
        nxt = _successors(node)
        if not nxt:
            return True
        stack.extend(nxt)
    return False


def _reached_norms(start: tp.dependency.Node) -> list[tp.dependency.Node]:
    """The BatchNorms the layer's output reaches before any other weighted layer."""
    seen = set()
    found = []
    stack = _successors(start)
    while stack:
        node = stack.pop()
        if node in seen or node.type in _WEIGHTED:
            continue
        seen.add(node)
        if node.type == _OPS.BN:
            found.append(node)
        stack.extend(_successors(node))
    return found
