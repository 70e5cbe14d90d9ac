"""An analysis for people: rich tables of the top and bottom units, PNG bar charts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from autotune.analysis import Analysis

SHOWN = 3
"""Channels shown at each end of a layer's ranking."""


def tables(analysis: Analysis, features: int = 5) -> list[Table]:
    """The layers (unfreezing order, channel extremes) and the input features' two ends."""
    out = []
    all_layers = analysis.meta.get("all_layers") or list(analysis.channels)
    order = analysis.unfreeze_order(all_layers)
    layers = Table(
        title=f"{analysis.method}: layers, most error-driving first (the unfreezing order)",
        title_justify="left",
    )
    for name in ("#", "layer", "error score", "channels", "lowest (pruned first)", "highest"):
        layers.add_column(name, justify="left" if "layer" in name or "est" in name else "right")
    for rank, name in enumerate(order, 1):
        scores = analysis.channels.get(name)
        error = (analysis.layers or {}).get(name)
        low = high = ""
        if scores is not None:
            ranked = analysis.pruning_order(name)
            low = _units(ranked[:SHOWN], scores)
            high = _units(ranked[::-1][:SHOWN], scores)
        layers.add_row(
            str(rank),
            name,
            "-" if error is None else f"{error:.4g}",
            "classifier" if scores is None else str(len(scores)),
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


def plot_analysis(analysis: Analysis, folder: Path) -> list[Path]:
    """Bar charts of the layer error scores and the feature importances; returns the files."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit

    folder.mkdir(parents=True, exist_ok=True)
    layer_scores = analysis.layers or {
        name: float(np.mean(scores)) for name, scores in analysis.channels.items()
    }
    written = [
        _bars(
            list(layer_scores),
            list(layer_scores.values()),
            "error score" if analysis.layers else "mean channel importance",
            f"{analysis.method}: layers, input side at the top",
            folder / f"{analysis.method}-layers.png",
        )
    ]
    if analysis.features is not None:
        values = np.asarray(analysis.features)
        order = np.argsort(values)[::-1][:30]
        names = analysis.feature_names or [str(i) for i in range(len(values))]
        unit = "mean |SHAP|, nats" if analysis.method == "shap" else analysis.method
        written.append(
            _bars(
                [names[i] for i in order],
                [float(values[i]) for i in order],
                f"importance ({unit})",
                f"{analysis.method}: input features, most important at the top",
                folder / f"{analysis.method}-features.png",
            )
        )
    return written


def _bars(names: list[str], values: list[float], xlabel: str, title: str, path: Path) -> Path:
    """A horizontal bar chart, the first name at the top."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.3 * len(names) + 1)))
    ax.barh(names[::-1], values[::-1], color="#4c72b0")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as a PNG and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _units(indices: list[int], scores: list[float]) -> str:
    return " ".join(f"{i}:{scores[i]:.2g}" for i in indices)
