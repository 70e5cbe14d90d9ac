"""Attention heads removed whole, the lowest-ranked first (see ``rank.heads``)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from autotune.load.anatomy import module_calls
from autotune.rank.heads import remove_heads


def prune_heads(
    model: nn.Module,
    scores: Mapping[str, np.ndarray],
    example: torch.Tensor,
    ratio: float,
    per_layer: Mapping[str, float],
    global_ranking: bool,
) -> dict[str, list[int]]:
    """Remove the lowest-scored heads of the attention modules ``scores`` names, in place.

    ``ratio`` is the fraction of each module's heads removed, rounded to whole heads (or with
    ``global_ranking``, of all their heads, the lowest across modules); ``per_layer`` overrides
    it for the modules it names. Every module keeps at least one head. Returns module -> the
    heads it kept.
    """
    modules = dict(model.named_modules())
    rest = {name: row for name, row in scores.items() if name not in per_layer}
    if global_ranking:
        dropped = _lowest_across(rest, ratio)
    else:
        dropped = {name: lowest(row, ratio) for name, row in rest.items()}
    dropped.update({name: lowest(scores[name], per_layer[name]) for name in per_layer})
    dropped = {name: heads for name, heads in dropped.items() if heads}
    calls = module_calls(model, example, {n: modules[n] for n in dropped})
    for name, heads in dropped.items():
        remove_heads(modules[name], sorted(heads), calls[name][0])
    return {
        name: [h for h in range(count) if h not in dropped.get(name, [])]
        for name, count in ((n, len(row)) for n, row in scores.items())
    }


def lowest(scores: np.ndarray, ratio: float) -> list[int]:
    """The lowest-scored ``ratio`` of the units, rounded to whole units, never all of them."""
    count = min(int(ratio * len(scores) + 0.5), len(scores) - 1)
    return [int(h) for h in np.argsort(scores, kind="stable")[: max(count, 0)]]


def _lowest_across(scores: Mapping[str, np.ndarray], ratio: float) -> dict[str, list[int]]:
    ranked = sorted((float(s), name, h) for name, row in scores.items() for h, s in enumerate(row))
    target = int(ratio * len(ranked) + 0.5)
    dropped: dict[str, list[int]] = {name: [] for name in scores}
    for _, name, head in ranked:
        if sum(map(len, dropped.values())) >= target:
            break
        if len(dropped[name]) < len(scores[name]) - 1:  # never the last head
            dropped[name].append(head)
    return dropped
