"""Seed trials: configurations read off the rankings, so a new study starts from informed points.

Each seed sets only the structural parameters (how much to prune, which layers to train); the
sampler fills in the rest. Values outside the space are clipped to it, and a seed the space
cannot express is left out.
"""

from __future__ import annotations

from typing import Any

from autotune.search.space import LAYER_PREFIX, SearchSpace


def seed_configs(
    space: SearchSpace, n_layers: int, prunable: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Trial parameters to enqueue at the start of a new study."""
    ranked = "shap" if "shap" in space.values_of("importance") else None
    wanted: list[dict[str, Any]] = []
    if space.may_be_nonzero("prune") or "prune_layers" in space.params:
        # Remove the bottom quarter, then the bottom half, of every layer's channels.
        wanted += [{"prune": r, "importance": ranked} for r in (0.25, 0.5)]
    if "shap" in space.values_of("unfreeze_order"):
        # Train only the half of the layers that drive the mistakes most.
        wanted.append({"unfreeze_order": "shap", "unfreeze": max(1, n_layers // 2), "prune": 0.0})
    if space.may_be_nonzero("drop_features"):
        wanted.append({"drop_features": 0.25, "importance": ranked})
    seeds = []
    for seed in wanted:
        params: dict[str, Any] = {}
        for name, value in seed.items():
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
        if params and params not in seeds:
            seeds.append(params)
    return seeds


def _fit(space: SearchSpace, name: str, value: Any, n_layers: int) -> Any:
    param = space.params.get(name)
    if param is None:
        return None
    if param.choices is not None:
        return value if value in param.choices else None
    if param.low is None:
        return None  # fixed: nothing to choose
    high = n_layers if param.high == "all" else float(param.high)  # type: ignore[arg-type]
    clipped = min(max(value, param.low), high)
    return int(clipped) if isinstance(param.low, int) else float(clipped)
