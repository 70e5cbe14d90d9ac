"""Enqueued first trials: the standard recipe, then configurations read off the rankings.

The recipe is the fine-tune a user would write by hand (``RECIPE``): the study's first trained
trial, so the best it reports can only improve on it. Each ranking seed sets only the
structural parameters (how much to prune, which layers to train); the sampler fills in the rest.
Values outside the space are clipped to it (a list of numbers takes the nearest), and a value the
space cannot express is left to the sampler.
"""

from __future__ import annotations

from typing import Any

from autotune.search.space import LAYER_PREFIX, SearchSpace

RECIPE: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 0.01,
    "optimizer": "adamw",
    "batch_size": 32,
    "loss": "cross_entropy",
    "unfreeze_order": "output",
    "prune": 0.0,
    "prune_width": 0.0,
    "drop_features": 0.0,
}
"""The standard full fine-tune: AdamW at 1e-3 (weight decay 0.01), batch 32, cross-entropy,
every layer trained, nothing removed, the model's own dropout."""


def recipe(space: SearchSpace, n_layers: int, prunable: tuple[str, ...], dropout: float) -> dict:
    """The trial parameters of ``RECIPE`` in ``space`` (``dropout``: the model's own)."""
    wanted = {**RECIPE, "unfreeze": n_layers, "dropout": dropout}
    return _in_space(space, wanted, n_layers, prunable)


def seed_configs(
    space: SearchSpace, n_layers: int, prunable: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Trial parameters to enqueue at the start of a new study."""
    ranked = "shap" if "shap" in space.values_of("importance") else None
    wanted: list[dict[str, Any]] = []
    if space.may_be_nonzero("prune") or "prune_layers" in space.params:
        # Remove the bottom quarter, then the bottom half, of every layer's channels.
        wanted += [{"prune": r, "prune_width": 0.0, "importance": ranked} for r in (0.25, 0.5)]
    if "shap" in space.values_of("unfreeze_order"):
        # Train only the half of the layers that drive the mistakes most.
        wanted.append({"unfreeze_order": "shap", "unfreeze": max(1, n_layers // 2), "prune": 0.0})
    if space.may_be_nonzero("drop_features"):
        wanted.append({"drop_features": 0.25, "importance": ranked})
    seeds = []
    for seed in wanted:
        params = _in_space(space, seed, n_layers, prunable)
        if params and params not in seeds:
            seeds.append(params)
    return seeds


def _in_space(
    space: SearchSpace, wanted: dict[str, Any], n_layers: int, prunable: tuple[str, ...]
) -> dict[str, Any]:
    """``wanted`` as trial parameters of ``space``: fitted to it, or left to the sampler."""
    params: dict[str, Any] = {}
    for name, value in wanted.items():
        if value is None:
            continue
        if name == "prune" and "prune_layers" in space.params:
            for layer in prunable:
                fitted = _fit(space, "prune_layers", value, n_layers)
                if fitted is not None:
                    params[f"{LAYER_PREFIX}{layer}"] = fitted
            continue
        fitted = _fit(space, name, value, n_layers)
        if fitted is not None:
            params[name] = fitted
    return params


def _fit(space: SearchSpace, name: str, value: Any, n_layers: int) -> Any:
    param = space.params.get(name)
    if param is None:
        return None
    if param.choices is not None:
        if value in param.choices:
            return value
        numbers = [c for c in param.choices if isinstance(c, (int, float)) and c is not True]
        if isinstance(value, (int, float)) and numbers:
            return min(numbers, key=lambda c: abs(c - value))
        return None
    if param.low is None:
        return None  # fixed: nothing to choose
    high = n_layers if param.high == "all" else float(param.high)  # type: ignore[arg-type]
    clipped = min(max(value, param.low), high)
    return int(clipped) if isinstance(param.low, int) else float(clipped)
