"""``Analysis``: one method's rankings of channels, layers and input features, as JSON and tables.

The pruning order of each layer's channels, the unfreezing order of the layers, and the dropping
order of the input features. It renders as rich tables in a terminal or a notebook cell.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Group
from rich.jupyter import JupyterMixin
from rich.table import Table

from autotune.errors import AutotuneError
from autotune.paths import write_text_atomically

FORMAT_VERSION = 5
"""2: gates placed by the dependency graph (pre-norm layers, unsupported layers left out);
3: attention modules' heads scored (``channels`` holds one score per head for them);
4: torchvision's attention split into heads when loaded; 5: a transformer's width scored
(``width``)."""
READABLE = (4, FORMAT_VERSION)
"""Formats ``load`` reads: 4 lacks only ``width`` (a report of a study analysed before reads
it as no width ranked)."""
SHOWN = 3
"""Channels shown at each end of a layer's ranking."""


@dataclass
class Analysis(JupyterMixin):
    """One method's rankings of a model's units on the user's data.

    Renders as its tables in a terminal (``rich.print``) or a notebook cell.
    """

    method: str
    channels: dict[str, list[float]]
    """Prunable layer -> importance of each output channel (higher: keep); for an attention
    module, of each head."""
    layers: dict[str, float] | None
    """Layer -> error score (higher: drives more mistakes); None when the method has none."""
    features: list[float] | None
    """Importance of each input feature (feature-vector models only)."""
    feature_names: list[str] | None = None
    width: dict[str, list[float]] = field(default_factory=dict)
    """A transformer's residual stream, named by its first writer -> importance of each of its
    channels (``rank.width``); empty for models without one."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Options, timings, hashes: what the analysis was computed from."""

    def __rich__(self) -> Group:
        return Group(*tables(self))

    def pruning_order(self, layer: str) -> list[int]:
        """Channels of ``layer``, least important first."""
        return least_first(self.channels[layer])

    def head_modules(self) -> list[str]:
        """The attention modules whose heads are ranked (``channels`` keys that are not layers
        of the unfreezing order)."""
        all_layers = self.meta.get("all_layers") or list(self.channels)
        return [name for name in self.channels if name not in all_layers]

    def unpruned(self) -> dict[str, str]:
        """Layers whose channels are left unpruned -> why. Not those inside an attention module
        whose heads are ranked: they lose the rows and columns of each head pruned whole."""
        heads = tuple(f"{name}." for name in self.head_modules())
        return {
            name: why
            for name, why in (self.meta.get("unpruned") or {}).items()
            if not name.startswith(heads)
        }

    def unfreeze_order(self, all_layers: list[str]) -> list[str]:
        """Layers by error score, highest first; unscored ones after, from the output back."""
        scored = self.layers or {}
        ranked = sorted((n for n in all_layers if n in scored), key=lambda n: -scored[n])
        return ranked + [n for n in reversed(all_layers) if n not in scored]

    def feature_order(self) -> list[int]:
        """Input features, least important first."""
        if self.features is None:
            raise AutotuneError(
                "this analysis has no feature scores: the model's input is not a vector"
            )
        return least_first(self.features)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Analysis:
        if raw.get("format_version") not in READABLE:
            raise AutotuneError(
                f"analysis format {raw.get('format_version')!r} is not one this autotune reads "
                f"({', '.join(map(str, READABLE))}): re-run the analysis"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in fields})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Analysis:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise AutotuneError(f"analysis file {str(path)!r} does not exist") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AutotuneError(
                f"analysis file {str(path)!r} is not valid JSON ({e}): delete it and re-run"
            ) from e
        return cls.from_dict(raw)


def tables(analysis: Analysis, features: int = 5) -> list[Table]:
    """The layers (unfreezing order, channel extremes) and the input features' two ends."""
    out = []
    all_layers = analysis.meta.get("all_layers") or list(analysis.channels)
    order = analysis.unfreeze_order(all_layers)
    unpruned = analysis.unpruned()
    layers = Table(
        title=f"{analysis.method}: layers, most error-driving first (the unfreezing order)",
        title_justify="left",
        caption=unpruned_note(unpruned),
        caption_justify="left",
    )
    driven = analysis.meta.get("errors_driven") or {}
    errors = analysis.meta.get("errors", 0)
    heads = ("#", "layer", "error score", "errors driven", "channels", "lowest (pruned first)")
    for name in (*heads, "highest"):
        layers.add_column(name, justify="left" if "layer" in name or "est" in name else "right")
    # Attention modules' heads and streams' widths (not layers of the unfreezing order) come
    # after, unranked.
    rows = [(str(i), name, name, "") for i, name in enumerate(order, 1)]
    rows += [("", name, name, " heads") for name in analysis.head_modules()]
    rows += [("", f"{root} (width)", root, " of the width") for root in analysis.width]
    for rank, shown, name, unit in rows:
        scores = analysis.width[name] if unit == " of the width" else analysis.channels.get(name)
        error = None if rank == "" else (analysis.layers or {}).get(name)
        low = high = ""
        if scores is not None:
            ranked = least_first(scores)
            low = _units(ranked[:SHOWN], scores)
            high = _units(ranked[::-1][:SHOWN], scores)
        layers.add_row(
            rank,
            shown,
            "-" if error is None else f"{error:.4g}",
            f"{driven[name]}/{errors}" if name in driven and rank else "-",
            f"{len(scores)}{unit}" if scores is not None else _unscored(name, all_layers, unpruned),
            low,
            high,
        )
    out.append(layers)
    if analysis.features is not None:
        ranked = analysis.feature_order()
        table = Table(
            title=f"{analysis.method}: input features, least and most important",
            title_justify="left",
        )
        for name in ("end", "feature", "importance"):
            table.add_column(name)
        names = analysis.feature_names or [str(i) for i in range(len(analysis.features))]
        for end, picked in (("bottom", ranked[:features]), ("top", ranked[::-1][:features])):
            for i in picked:
                table.add_row(end, names[i], f"{analysis.features[i]:.4g}")
        out.append(table)
    return out


def least_first(scores: list[float]) -> list[int]:
    """Units by their scores, the least important first (ties in index order)."""
    return [int(i) for i in np.argsort(scores, kind="stable")]


def unpruned_note(unpruned: dict[str, str]) -> str | None:
    """One line on the layers left unpruned (layer -> why), or None when there are none."""
    if not unpruned:
        return None
    kinds = sorted({kind for why in unpruned.values() for kind in why.split(", ")})
    shown = ", ".join(list(unpruned)[:3])
    if len(unpruned) > 3:
        shown += f" and {len(unpruned) - 3} more"
    return (
        f"left unpruned: {len(unpruned)} layer{'s' if len(unpruned) > 1 else ''} ({shown}), "
        f"whose channels pass through {', '.join(kinds)}; see 'Supported architectures' in "
        "the README"
    )


def _unscored(name: str, all_layers: list[str], unpruned: dict[str, str]) -> str:
    if name in unpruned:
        return "unpruned"
    return "classifier" if all_layers and name == all_layers[-1] else "-"


def _units(indices: list[int], scores: list[float]) -> str:
    return " ".join(f"{i}:{scores[i]:.2g}" for i in indices)
