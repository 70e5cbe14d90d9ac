"""Attention heads: found, gated and removed whole.

A timm-style attention module (an int ``num_heads``, a fused ``qkv`` Linear whose outputs are
q, k, v, each heads x head width, and an output ``proj`` Linear) mixes positions within a head
but never mixes heads: closing head h's gate (its slice of ``proj``'s input) is exactly what
removing the head does. Removal goes through torch-pruning's dependency graph from ``proj``'s
input channels, which follows the reshape, permute and unbind back to the head's q, k and v
rows of ``qkv``; only those rows and ``proj``'s columns go (a norm over each head's width, as
timm's ``qk_norm``, is shared by the heads and stays whole). Then the module's ``num_heads``
(and ``attn_dim``, where it has one, as timm's does) are set to the heads kept. The head width
stays.

Whether a forward still runs with fewer heads depends on how it computes its shapes (timm
before 1.0 reshaped to the input's width), so each module is checked on the example: a copy
with one head removed must give what the original gives with that head's gate closed.
Otherwise its heads are left unpruned, with the reason. torchvision's ``nn.MultiheadAttention``
(whose forward needs the heads to fill the stream's width, with its output projection applied
functionally, where no hook can gate it) reaches this module as ``load.attention.SelfAttention``:
the same weights in this form, swapped in when the model is loaded.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch_pruning as tp
from torch import nn

from autotune.load.anatomy import Call, module_calls


@dataclass(frozen=True)
class Heads:
    """One attention module's heads."""

    module: str
    proj: str
    """The output projection, whose input holds the heads side by side."""
    count: int
    width: int
    """Channels per head."""
    unsupported: str | None
    """Why its heads cannot be removed, or None."""


def is_attention(module: nn.Module) -> bool:
    """Whether ``module`` is timm-style attention with more than one head."""
    heads = getattr(module, "num_heads", None)
    qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
    return (
        isinstance(heads, int)
        and heads > 1
        and isinstance(qkv, nn.Linear)
        and isinstance(proj, nn.Linear)
        and qkv.out_features == 3 * proj.in_features
        and proj.in_features % heads == 0
    )


def parts(module: nn.Module) -> tuple[nn.Linear, nn.Linear, int]:
    """An attention module's ``qkv`` and ``proj`` layers and its head count."""
    return cast(nn.Linear, module.qkv), cast(nn.Linear, module.proj), cast(int, module.num_heads)


def attention_heads(model: nn.Module, example: torch.Tensor) -> list[Heads]:
    """The heads of every attention module the forward pass calls once."""
    candidates = {n: m for n, m in model.named_modules() if is_attention(m)}
    if not candidates:
        return []
    calls = module_calls(model, example, candidates)
    found = []
    for name, module in candidates.items():
        if len(calls.get(name, [])) != 1:  # off the path, or shared between blocks
            continue
        _, proj, count = parts(module)
        width = proj.in_features // count
        why = _check(module, calls[name][0], width)
        found.append(Heads(name, f"{name}.proj", count, width, why))
    return found


def remove_heads(module: nn.Module, heads: list[int], call: Call) -> set[str]:
    """Remove ``heads`` from attention ``module`` in place; ``call``: an input it takes.

    Only ``qkv`` and ``proj`` lose rows and columns. Returns the kinds of the module's other
    layers the heads pass through, left as they are: a norm over each head's width (timm's
    ``qk_norm``) is shared by the heads and stays whole; one over all heads breaks the forward
    (``attention_heads`` checks which, before any head is scored).
    """
    qkv, proj, count = parts(module)
    width = proj.in_features // count
    channels = [h * width + d for h in heads for d in range(width)]
    own = {m for m in module.modules() if m not in (qkv, proj)}
    with _traceable(module), warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")  # parameters outside the heads' group are not ours
        graph = tp.DependencyGraph().build_dependency(
            module, example_inputs=call, forward_fn=lambda m, c: _output(m(*c[0], **c[1]))
        )
        group = graph.get_pruning_group(proj, tp.prune_linear_in_channels, channels)
        for dep, idxs in group:
            if dep.target.module in (qkv, proj):
                dep(idxs)
    others = {type(dep.target.module).__name__ for dep, _ in group if dep.target.module in own}
    # Plain int attributes (nn.Module's typing only knows tensors and submodules).
    setattr(module, "num_heads", count - len(heads))  # noqa: B010
    if isinstance(getattr(module, "attn_dim", None), int):
        setattr(module, "attn_dim", (count - len(heads)) * width)  # noqa: B010
    return others


def _head_gate(width: int, head: int, count: int):
    """A forward pre-hook for ``proj`` that zeroes one head's slice of its input."""
    keep = torch.ones(count * width)
    keep[head * width : (head + 1) * width] = 0

    def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0] * keep.to(args[0].device), *args[1:])

    return hook


def _check(module: nn.Module, call: Call, width: int) -> str | None:
    args, kwargs = call
    _, proj, count = parts(module)
    pruned = copy.deepcopy(module).eval()
    others: set[str] = set()
    try:
        others = remove_heads(pruned, [0], call)
        with torch.no_grad():
            got = _output(pruned(*args, **kwargs))
    except Exception as e:  # a forward tied to the head count: scored nowhere, never a failure
        if others:
            return f"attention whose heads pass through {', '.join(sorted(others))}"
        return f"attention whose forward needs all its heads ({type(e).__name__})"
    handle = proj.register_forward_pre_hook(_head_gate(width, 0, count))
    was = module.training
    try:
        with torch.no_grad():
            gated = _output(module.eval()(*args, **kwargs))
    finally:
        handle.remove()
        module.train(was)
    if not isinstance(got, torch.Tensor) or got.shape != gated.shape:
        return "attention whose output changes shape without a head"
    if not torch.allclose(got, gated, rtol=1e-4, atol=1e-5):
        return "attention whose heads are mixed before the output projection"
    return None


def _output(out: Any) -> Any:
    """A module's output tensor: the first of a tuple (``nn.MultiheadAttention``'s convention,
    kept by ``load.attention.SelfAttention``: output, attention weights)."""
    return out[0] if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor) else out


@contextmanager
def _traceable(module: nn.Module) -> Iterator[None]:
    """Parameters that require gradients: torch-pruning traces the graph through autograd."""
    flags = {n: p.requires_grad for n, p in module.named_parameters()}
    for p in module.parameters():
        p.requires_grad_(True)
    try:
        yield
    finally:
        # Pruned parameters are new objects: their flags are restored by name.
        for n, p in module.named_parameters():
            p.requires_grad_(flags.get(n, True))
