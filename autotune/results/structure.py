"""What an exported model kept of the source's units: its channels, heads, width and input
columns, as ``config.yaml``'s ``structure`` section lists them (the size and speed beside them
are ``results.export``'s)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autotune.trial.build import Changes


def kept_units(
    changes: Changes, columns: int | None, names: Sequence[str] | None
) -> dict[str, Any]:
    """``changes`` (a rebuilt trial's) as the bundle records them; ``columns``: the data's
    feature count (None for images), ``names``: its column names, if it has them."""

    def listed(kept: dict[str, list[int]]) -> dict[str, Any]:
        return {name: {"kept": len(units), "indices": units} for name, units in kept.items()}

    return {
        "channels": listed(changes.channels),
        "heads": listed(changes.heads),
        "width": listed(changes.width),
        "trained_layers": changes.unfrozen,
        "inputs": _inputs(changes.features, columns, names),
    }


def _inputs(
    features: list[int] | None, columns: int | None, names: Sequence[str] | None
) -> dict[str, Any] | None:
    if columns is None:
        return None
    kept = features if features is not None else list(range(columns))
    dropped = [i for i in range(columns) if i not in set(kept)]
    return {
        "expects": (
            f"model.pt2: the data's {columns} columns (it selects its {len(kept)} inside); "
            f"model.pt: the {len(kept)} columns below, in this order"
        ),
        "columns": [names[i] for i in kept] if names else kept,
        "indices": kept,
        "dropped": [names[i] for i in dropped] if names else dropped,
    }
