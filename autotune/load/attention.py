"""torchvision's self-attention, written so that its heads can be removed.

``nn.MultiheadAttention`` keeps q, k and v in one ``in_proj_weight`` parameter, applies its
output projection functionally, and needs its heads to fill the embedding width: no hook can
gate one head and no pruner can remove one. ``split_attention`` replaces each module that a
forward pass calls as plain self-attention (the same tensor as query, key and value, no masks,
no attention weights asked for: how torchvision's ViT calls it) with ``SelfAttention``: the
same weights in a fused ``qkv`` Linear and a ``proj`` Linear, and a ``num_heads`` that
``rank.heads`` can lower. Each replacement is checked on the example to give what the original
gives; a module called any other way, or that does not match, stays as it is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autotune.load.anatomy import device_of, module_calls

TOLERANCE = 1e-5
"""Largest difference, relative to the output's scale, between a replacement and the original
on the example (the fused kernels sum in another order)."""


class SelfAttention(nn.Module):
    """``nn.MultiheadAttention`` as self-attention, with its projections as Linear layers.

    Takes the same call (``query, key, value, need_weights=False``) and returns
    ``(output, None)``; ``key`` and ``value`` must be ``query`` itself.
    """

    def __init__(self, source: nn.MultiheadAttention) -> None:
        super().__init__()
        width = source.embed_dim
        self.num_heads = source.num_heads
        self.head_dim = source.head_dim
        self.dropout = source.dropout
        self.batch_first = source.batch_first
        bias = source.in_proj_bias is not None
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=source.out_proj.bias is not None)
        with torch.no_grad():
            self.qkv.weight.copy_(source.in_proj_weight)
            if source.in_proj_bias is not None:
                self.qkv.bias.copy_(source.in_proj_bias)
            self.proj.weight.copy_(source.out_proj.weight)
            if source.out_proj.bias is not None:
                self.proj.bias.copy_(source.out_proj.bias)
        self.qkv.requires_grad_(source.in_proj_weight.requires_grad)
        self.proj.requires_grad_(source.out_proj.weight.requires_grad)
        self.train(source.training)

    def forward(self, query: torch.Tensor, *_: Any, **__: Any) -> tuple[torch.Tensor, None]:
        x = query if self.batch_first else query.transpose(0, 1)
        batch, tokens, _width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        out = self.proj(out.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


def split_attention(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Replace, in place, each ``nn.MultiheadAttention`` of ``model`` that the forward pass on
    ``example`` calls once as plain self-attention; returns the names replaced."""
    candidates = {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, nn.MultiheadAttention) and _plain(m) and n
    }
    if not candidates:
        return []
    calls = module_calls(model, example.to(device_of(model)), candidates)
    was = model.training
    replaced = []
    for name, module in candidates.items():
        found = calls.get(name, [])
        if len(found) != 1 or not _self_attention_call(*found[0]):
            continue
        new = SelfAttention(module)
        query = found[0][0][0]
        with torch.no_grad():
            old_out = module.eval()(query, query, query, need_weights=False)[0]
            new_out = new.eval()(query)[0]
        module.train(was)
        new.train(was)
        scale = old_out.abs().max().clamp_min(1.0)
        if not torch.allclose(old_out, new_out, atol=float(TOLERANCE * scale), rtol=0):
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        replaced.append(name)
    return replaced


def _plain(m: nn.MultiheadAttention) -> bool:
    """One packed input projection, no extra key/value biases, no zero attention."""
    return (
        m._qkv_same_embed_dim
        and m.in_proj_weight is not None
        and m.bias_k is None
        and m.bias_v is None
        and not m.add_zero_attn
        and m.embed_dim % m.num_heads == 0
    )


def _self_attention_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    names = ("query", "key", "value")
    given = dict(zip(names, args, strict=False)) | {k: kwargs[k] for k in names if k in kwargs}
    if len(given) != 3 or not (given["query"] is given["key"] is given["value"]):
        return False
    extra = dict(zip(
        ("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal"),
        args[3:], strict=False,
    )) | {k: v for k, v in kwargs.items() if k not in names}  # fmt: skip
    return (
        extra.get("key_padding_mask") is None
        and extra.get("attn_mask") is None
        and extra.get("need_weights") is False
        and not extra.get("is_causal", False)
    )
