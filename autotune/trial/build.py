"""A trial's model: the source model copied, its input features dropped, its channels,
attention heads and width pruned, its layers unfrozen, all read from the analyses' rankings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from autotune.config import MAX_RATIO, TrialConfig
from autotune.load.anatomy import copy_model, layers
from autotune.rank.analysis import Analysis
from autotune.rank.heads import is_attention
from autotune.trial.freeze import configure
from autotune.trial.prune import drop_features, prune, prune_width


@dataclass
class Changes:
    """What ``build`` changed in the model's structure."""

    features: list[int] | None = None
    """Input columns the model still takes, in order; None when all."""
    channels: dict[str, list[int]] = field(default_factory=dict)
    """Pruned layer -> the channels it kept."""
    heads: dict[str, list[int]] = field(default_factory=dict)
    """Pruned attention module -> the heads it kept."""
    width: dict[str, list[int]] = field(default_factory=dict)
    """Narrowed residual stream (by its first writer) -> the channels it kept."""
    unfrozen: list[str] = field(default_factory=list)

    def kept(self) -> dict[str, Any]:
        """What a trial records of them (``search.record``): how many features, heads and
        channels of the width were kept, where some were removed."""
        counts: dict[str, Any] = {}
        if self.features is not None:
            counts["features_kept"] = len(self.features)
        if self.heads:
            counts["heads_kept"] = {n: len(k) for n, k in self.heads.items()}
        if self.width:
            counts["width_kept"] = {n: len(k) for n, k in self.width.items()}
        return counts


def build(
    model: nn.Module,
    config: TrialConfig,
    analyses: dict[str, Analysis],
    example: torch.Tensor,
) -> tuple[nn.Module, Changes]:
    """A changed copy of ``model`` (on the CPU): ``example`` is a CPU input batch for tracing."""
    model = copy_model(model).cpu()
    changes = Changes()
    if config.drop_features > 0:
        ranking = _analysis(analyses, config.importance).feature_order()
        count = min(round(config.drop_features * len(ranking)), round(MAX_RATIO * len(ranking)))
        changes.features = sorted(ranking[count:])
        drop_features(model, changes.features, example)
        example = example[:, changes.features]
    if config.prune > 0 or config.prune_layers:
        analysis = _analysis(analyses, config.importance)
        scores = {k: np.asarray(v) for k, v in analysis.channels.items()}
        # Before pruning: a module left with one head no longer counts as attention.
        attention = {n for n, m in model.named_modules() if is_attention(m)}
        kept = prune(
            model,
            scores,
            example,
            config.prune,
            config.prune_layers,
            global_ranking=config.prune_scope == "global",
        )
        changes.heads = {n: k for n, k in kept.items() if n in attention}
        changes.channels = {n: k for n, k in kept.items() if n not in changes.heads}
    if config.prune_width > 0:
        streams = _analysis(analyses, config.importance).width
        scores = {k: np.asarray(v) for k, v in streams.items()}
        changes.width = prune_width(model, scores, example, config.prune_width)
    order = None
    if config.unfreeze_order != "output":
        names = [unit.name for unit in layers(model)]
        order = _analysis(analyses, config.unfreeze_order).unfreeze_order(names)
    configure(model, config, order)
    training = {n.rpartition(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    changes.unfrozen = [unit.name for unit in layers(model) if training & set(unit.modules)]
    return model, changes


def _analysis(analyses: dict[str, Analysis], method: str) -> Analysis:
    if method not in analyses:
        raise KeyError(f"no {method!r} analysis was run for this search; have {sorted(analyses)}")
    return analyses[method]
