"""What a model is made of: its layers in forward order, its classifier, its parameter counts.

A "layer" is a module that owns parameters, in registration order (which follows the forward
pass in nearly every model). A module whose parameters are all 1-D (BatchNorm, LayerNorm, an
affine scale) travels with the layer before it: it normalises that layer's output.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autotune.errors import AutotuneError


@dataclass(frozen=True)
class Layer:
    """A trainable unit of the model, as the unfreezing order counts them."""

    name: str
    """Dotted name of its first module (``features.0``, ``layer4.1.conv2``)."""
    modules: tuple[str, ...]
    """Dotted names of every module in the unit (the layer and its normalisation)."""


def layers(model: nn.Module) -> list[Layer]:
    """The model's layers, input side first."""
    owners: dict[str, list[int]] = {}
    for param_name, param in model.named_parameters():
        owner = param_name.rpartition(".")[0]
        owners.setdefault(owner, []).append(param.ndim)
    units: list[list[str]] = []
    for owner, dims in owners.items():
        if units and max(dims) <= 1:
            units[-1].append(owner)
        else:
            units.append([owner])
    return [Layer(unit[0], tuple(unit)) for unit in units]


def out_channels(layer: nn.Module) -> int:
    """A Linear layer's outputs, a Conv layer's output channels."""
    if isinstance(layer, nn.Linear):
        return layer.out_features
    return int(layer.out_channels)  # type: ignore[arg-type]


def classifier_of(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` in registration order: the classifier of nearly every model."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        # Asked for by a space that ranks, prunes or adds dropout: the units are ranked by how
        # they drive its class scores. ``space=auto`` picks ``default`` for such a model.
        raise AutotuneError(
            "the model has no nn.Linear classifier (its class scores come from another layer, "
            "as in squeezenet's final convolution), so it cannot be analysed or pruned: pass "
            "--space default to fine-tune it only"
        )
    return found[-1]


def has_classifier(model: nn.Module) -> bool:
    """Whether ``model`` has the nn.Linear ``classifier_of`` finds."""
    return any(isinstance(m, nn.Linear) for m in model.modules())


def device_of(model: nn.Module, default: torch.device | str = "cpu") -> torch.device:
    """Where ``model``'s parameters are (``default`` for a model without any): inputs that
    trace or probe it go there, since the search keeps the source model on its device."""
    return next((p.device for p in model.parameters()), torch.device(default))


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``, made without autograd: a TorchScript module's copied parameters
    would otherwise be non-leaf tensors that no optimizer accepts, and never train (its
    ``requires_grad`` flags are kept; ``trial.freeze.unfreeze`` sets them)."""
    with torch.no_grad():
        return copy.deepcopy(model)


def set_training(module: nn.Module, training: bool) -> None:
    """Switch train/eval mode; ``torch.export`` programs keep the mode they were exported in."""
    with contextlib.suppress(NotImplementedError):
        module.train(training)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = trainable = 0
    for p in module.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


Call = tuple[tuple[Any, ...], dict[str, Any]]
"""The arguments one forward call of a module received."""


def module_calls(
    model: nn.Module, example: torch.Tensor, modules: Mapping[str, nn.Module]
) -> dict[str, list[Call]]:
    """The inputs each of ``modules`` receives in one forward pass of ``model`` on ``example``
    (in eval mode, the model's mode restored). A tensor passed several times, as self-attention
    passes one as query, key and value, is the same object in each place."""
    calls: dict[str, list[Call]] = {}
    detached: dict[int, torch.Tensor] = {}

    def detach(a: Any) -> Any:
        if not isinstance(a, torch.Tensor):
            return a
        return detached.setdefault(id(a), a.detach())

    def record(name: str):
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            call = tuple(detach(a) for a in args), {k: detach(v) for k, v in kwargs.items()}
            calls.setdefault(name, []).append(call)

        return hook

    handles = [m.register_forward_pre_hook(record(n), with_kwargs=True) for n, m in modules.items()]
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        model.train(was)
        for handle in handles:
            handle.remove()
    return calls
