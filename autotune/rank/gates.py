"""Gates: a multiplicative switch on every unit (channel, neuron, input feature) of a model.

A unit is an output channel of a Conv layer or a neuron of a Linear layer, gated where zeroing
it is exactly what structural pruning does (``rank.placement``: after the normalisation that
follows it, or after each one that normalises it later), an attention head (``rank.heads``:
its slice of the output projection's input), a channel of a transformer's residual stream
(``rank.width``: inside each LayerNorm that reads it), or an input feature of a feature-vector
model.
``sites`` finds where the gates go;
``Gated`` wraps a model so that the gates are its inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from autotune.load.anatomy import classifier_of, device_of, layers
from autotune.rank.heads import attention_heads
from autotune.rank.placement import Point, placements
from autotune.rank.width import masked_layer_norm, residual_streams

_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class Site:
    """Where one layer's units are gated (see ``rank.placement``)."""

    layer: str
    """The layer's name (its Conv/Linear module), as ``load.anatomy.layers`` names it."""
    points: tuple[Point, ...]
    """The module outputs the gate multiplies: the layer's normalisation when it has one, each
    later normalisation of its channels for pre-norm models, else the layer itself."""
    channels: int
    prunable: bool
    """False for the classifier (its outputs are the classes) and unsupported layers."""
    unsupported: str | None = None
    """Why the layer is left unpruned: the unsupported module kinds its channels pass through."""
    heads: bool = False
    """The units are the heads of the attention module ``layer`` (``rank.heads``)."""
    covers: tuple[str, ...] = ()
    """For a residual stream's width (``rank.width``; ``layer`` is its first writer): the layers
    whose output channels it is. Empty for every other site."""

    @property
    def width(self) -> bool:
        """The units are the channels of a residual stream (``rank.width``)."""
        return bool(self.covers)


def sites(model: nn.Module, example: torch.Tensor) -> list[Site]:
    """The gate sites of ``model``: one per Conv/Linear layer whose output can be gated."""
    example = example[:2].to(device_of(model))
    named = dict(model.named_modules())
    _, classifier = classifier_of(model)
    candidates = [u.name for u in layers(model) if isinstance(named[u.name], _WEIGHTED)]
    placed = placements(model, example, candidates)
    watched = set(candidates) | {p.module for pl in placed.values() for p in pl.points}
    shapes: dict[str, list[torch.Size]] = {}

    def record(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                shapes.setdefault(name, []).append(output.shape)

        return hook

    handles = [named[name].register_forward_hook(record(name)) for name in watched]
    try:
        with torch.no_grad(), _eval(model):
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    found = []
    for name in candidates:
        first = named[name]
        conv = isinstance(first, nn.modules.conv._ConvNd)
        channels = int(first.out_channels if conv else first.out_features)
        seen = shapes.get(name, [])
        # A module called twice per forward (weight sharing) has no single output to gate.
        if len(seen) != 1 or len(seen[0]) < 2 or seen[0][1 if conv else -1] != channels:
            continue
        placement = placed[name]
        if any(len(shapes.get(p.module, [])) != 1 for p in placement.points):
            continue
        why = placement.unsupported
        prunable = first is not classifier and why is None
        found.append(Site(name, placement.points, channels, prunable, why))
    # Heads last, so that the coalitions drawn for the layers above stay the same.
    for heads in attention_heads(model, example):
        point = Point(heads.proj, -1, None, width=heads.width, before=True)
        prunable = heads.unsupported is None
        found.append(Site(heads.module, (point,), heads.count, prunable, heads.unsupported, True))
    # Then the widths, whose layers are gated above too (their own outputs, unprunable alone).
    norms = [s.layer for s in found if s.unsupported and "LayerNorm" in s.unsupported.split(", ")]
    for stream in residual_streams(model, example, norms):
        points = tuple(Point(norm, -1, None, norm=True) for norm in stream.norms)
        found.append(Site(stream.root, points, stream.channels, True, covers=stream.members))
    return found


class Gated(nn.Module):
    """``model`` with a gate on every unit: ``forward(*gates)`` -> true-class log-probability.

    The input and label are bound with ``bind``: shap explains one sample at a time, and the
    gates are the only inputs it varies.
    """

    def __init__(self, model: nn.Module, found: list[Site], features: bool) -> None:
        super().__init__()
        self.model = model
        self.sites = found
        self.features = features
        self.x = torch.empty(0)
        self.y = torch.empty(0, dtype=torch.long)
        self._gates: tuple[torch.Tensor, ...] = ()
        self._handles = self._attach()

    def _attach(self) -> list[RemovableHandle]:
        named = dict(self.model.named_modules())
        offset = 1 if self.features else 0
        return [
            named[point.module].register_forward_pre_hook(self._hook(i + offset, point, True))
            if point.before
            else named[point.module].register_forward_hook(self._hook(i + offset, point))
            for i, site in enumerate(self.sites)
            for point in site.points
        ]

    def on(self, device: torch.device | str) -> Gated:
        """A new ``Gated`` over a copy of the model on ``device``.

        Not ``copy.deepcopy(self).to(device)``: the copied hooks would still read the gates of
        ``self``, so the copy would run ungated and its gradients would not reach the gates.
        """
        for handle in self._handles:
            handle.remove()
        try:
            model = copy.deepcopy(self.model).to(device)
        finally:
            self._handles = self._attach()
        return Gated(model, self.sites, self.features)

    def gate_sizes(self) -> list[int]:
        first = [self.x.shape[1]] if self.features else []
        return first + [s.channels for s in self.sites]

    def bind(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def _hook(self, index: int, point: Point, before: bool = False):
        dim = point.channel_dim
        positions = None if point.positions is None else torch.tensor(point.positions)

        def gated(output: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
            if point.width > 1:  # one gate per head: its slice of channels
                gate = gate.repeat_interleave(point.width, dim=1)
            if positions is not None:  # the layer's channels among others (a concatenation)
                whole = gate.new_ones(gate.shape[0], output.shape[dim])
                gate = whole.index_copy(1, positions.to(gate.device), gate)
            shape = [1] * output.ndim
            shape[0], shape[dim] = gate.shape[0], gate.shape[1]
            return output * gate.reshape(shape)

        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor):
            if not self._gates:  # an ungated forward pass
                return output
            if point.norm:  # the LayerNorm again, over the open channels only
                return masked_layer_norm(module, args[0], self._gates[index])  # type: ignore[arg-type]
            return gated(output, self._gates[index])

        def pre_hook(
            _module: nn.Module, args: tuple[torch.Tensor, ...]
        ) -> tuple[torch.Tensor, ...]:
            return (gated(args[0], self._gates[index]), *args[1:]) if self._gates else args

        return pre_hook if before else hook

    def forward(self, *gates: torch.Tensor) -> torch.Tensor:
        batch = gates[0].shape[0]
        x = self.x if len(self.x) == batch else self.x.expand(batch, *self.x.shape[1:])
        y = self.y if len(self.y) == batch else self.y.expand(batch)
        self._gates = gates
        try:
            if self.features:
                x = x * gates[0]
            logits = self.model(x)
        finally:
            self._gates = ()
        return torch.log_softmax(logits, dim=1).gather(1, y.reshape(-1, 1))


@contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)
