"""A transformer's width: the channels of its residual stream, found, gated and removed together.

In a pre-norm transformer (ViT, timm's and torchvision's) the patch embedding, every block's
output projections, the class token and the position embedding all write the same channels,
and every read of them goes through a LayerNorm (each block's two, the final one). Those
channels are one pruning group, and ``rank.placement`` leaves it unpruned: a LayerNorm mixes
channels through its mean and variance, so no gate on a channel equals removing it. A gate
inside each LayerNorm does: with its statistics taken over the open channels only and its
output multiplied by the gate (``masked_layer_norm``), closing a channel gives what removing it
from the whole group gives. The removal itself goes through torch-pruning's dependency graph
from the stream's first writer, then the model's own record of its width (torchvision's
``hidden_dim``, which its forward reshapes by) is set to the channels kept.

Whether a model's stream is read only through LayerNorms is checked, not assumed: a copy with
two channels removed must give what the original gives with those channels gated. A stream
read elsewhere (ConvNeXt's depthwise convolutions read it directly) stays unpruned.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from autotune.load.anatomy import classifier_of, out_channels

WIDTH_ATTRIBUTES = ("hidden_dim", "embed_dim", "num_features")
"""Integer attributes by which a model records its width (torchvision's ViT reshapes its patch
embedding by ``hidden_dim``): set to the channels kept where they held the channels before."""


_WRITERS = (
    tp.prune_conv_out_channels,
    tp.prune_depthwise_conv_out_channels,
    tp.prune_linear_out_channels,
)


@dataclass(frozen=True)
class Stream:
    """One residual stream whose width can be removed."""

    root: str
    """Its first writer (the patch embedding): the layer the stream's channels are named by."""
    norms: tuple[str, ...]
    """The LayerNorms through which every read of the stream goes: where its gates are."""
    members: tuple[str, ...]
    """The Conv/Linear layers whose output channels are the stream's."""
    channels: int


def masked_layer_norm(norm: nn.LayerNorm, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` over the channels ``gate`` (batch x channels, 1 open, 0 closed) leaves open,
    zero at the closed ones: what the LayerNorm gives once the closed channels are removed."""
    shape = [gate.shape[0]] + [1] * (x.ndim - 2) + [gate.shape[1]]
    g = gate.reshape(shape)
    count = g.sum(-1, keepdim=True).clamp_min(1e-6)
    mean = (x * g).sum(-1, keepdim=True) / count
    var = (g * (x - mean) ** 2).sum(-1, keepdim=True) / count
    out = (x - mean) / torch.sqrt(var + norm.eps)
    if norm.weight is not None:
        out = out * norm.weight
    if norm.bias is not None:
        out = out + norm.bias
    return out * g


def residual_streams(
    model: nn.Module, example: torch.Tensor, layer_names: list[str]
) -> list[Stream]:
    """The streams of ``model`` whose width can be removed, each found from the first of
    ``layer_names`` (Conv/Linear layers in forward order, left unpruned for their LayerNorms)
    that writes it."""
    traced = copy.deepcopy(model).eval()
    for p in traced.parameters():
        p.requires_grad_(True)  # the graph is traced through autograd
    modules = dict(traced.named_modules())
    names = {m: n for n, m in modules.items()}
    try:
        graph = _graph(traced, example[:2])
    except Exception:  # a model torch-pruning cannot trace keeps its width
        return []
    found: list[Stream] = []
    covered: set[str] = set()
    for name in layer_names:
        layer = modules[name]
        if name in covered or layer not in graph.module2node:
            continue
        stream = _stream(graph, names, name, layer)
        if stream is None:
            continue
        covered.update(stream.members)
        if _exact(model, stream, example[:2]):
            found.append(stream)
    return found


def remove_width(model: nn.Module, root: str, channels: list[int], example: torch.Tensor) -> None:
    """Remove ``channels`` of the stream first written by layer ``root`` from ``model``, in
    place; ``example``: an input the model takes."""
    layer = dict(model.named_modules())[root]
    width = out_channels(layer)
    graph = _graph(model, example[:2])
    pruner = graph.get_pruner_of_module(layer)
    graph.get_pruning_group(layer, pruner.prune_out_channels, channels).prune()
    # The modules that hold the stream (the root's ancestors), not another of the same width.
    parts = root.split(".")
    for module in (model.get_submodule(".".join(parts[:i])) for i in range(len(parts))):
        for attribute in WIDTH_ATTRIBUTES:
            value = getattr(module, attribute, None)
            if isinstance(value, int) and value == width:
                setattr(module, attribute, width - len(channels))


def _graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    with warnings.catch_warnings(), torch.enable_grad():
        # torch-pruning warns about each parameter it cannot prune: none of ours here.
        warnings.simplefilter("ignore")
        return tp.DependencyGraph().build_dependency(model, example_inputs=example)


def _stream(
    graph: tp.DependencyGraph, names: dict[nn.Module, str], name: str, layer: nn.Module
) -> Stream | None:
    channels = int(graph.get_out_channels(layer))
    pruner = graph.get_pruner_of_module(layer)
    group = graph.get_pruning_group(layer, pruner.prune_out_channels, list(range(channels)))
    norms, members = [], [name]
    for dep, _ in group:
        module = dep.target.module
        if isinstance(module, nn.LayerNorm):
            if tuple(module.normalized_shape) != (channels,):
                return None  # a norm over more than the stream's channels
            norms.append(names[module])
        elif dep.handler in _WRITERS:
            members.append(names[module])
    if not norms:
        return None
    return Stream(name, tuple(dict.fromkeys(norms)), tuple(dict.fromkeys(members)), channels)


def _exact(model: nn.Module, stream: Stream, example: torch.Tensor) -> bool:
    """Whether removing two of the stream's channels gives what gating them gives, at the
    classifier's input: its output alone can hide a difference (a zero-initialised head, as
    torchvision's ViT starts with, scores every input the same)."""
    closed = [0, stream.channels - 1]
    pruned = copy.deepcopy(model).eval()
    gated = copy.deepcopy(model).eval()
    classifier, _ = classifier_of(model)
    try:
        for p in pruned.parameters():
            p.requires_grad_(True)
        remove_width(pruned, stream.root, closed, example)
        gate = torch.ones(len(example), stream.channels, device=example.device)
        gate[:, closed] = 0
        modules = dict(gated.named_modules())
        for norm in stream.norms:
            modules[norm].register_forward_hook(
                lambda m, args, _out: masked_layer_norm(m, args[0], gate)
            )
        got = _input_of(pruned, classifier, example)
        want = _input_of(gated, classifier, example)
    except Exception:  # a forward tied to the width (a reshape by a constant): not prunable
        return False
    if want.shape[-1] == stream.channels and got.shape[-1] == stream.channels - len(closed):
        # The classifier reads the stream: closed, its columns must be zero (else a closed
        # channel still reaches it), and the others what the narrowed copy gives.
        if want[..., closed].abs().max() > 1e-6 * float(want.abs().max().clamp_min(1)):
            return False
        want = want[..., [c for c in range(stream.channels) if c not in closed]]
    if got.shape != want.shape:
        return False
    return torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max().clamp_min(1)))


def _input_of(model: nn.Module, name: str, example: torch.Tensor) -> torch.Tensor:
    """What module ``name`` of ``model`` takes (its first call) in a forward pass on ``example``."""
    seen: list[torch.Tensor] = []
    module = model.get_submodule(name)
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            model(example)
    finally:
        handle.remove()
    return seen[0]
