"""An analysis for people: rich tables of the top and bottom units, PNG bar charts."""

from __future__ import annotations

from pathlib import Path

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
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    layer_scores = analysis.layers or {
        name: float(np.mean(scores)) for name, scores in analysis.channels.items()
    }
    label = "error score" if analysis.layers else "mean channel importance"
    names = list(layer_scores)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.3 * len(names) + 1)))
    ax.barh(names[::-1], [layer_scores[n] for n in names][::-1], color="#4c72b0")
    ax.set_xlabel(label)
    ax.set_title(f"{analysis.method}: layers, input side at the top")
    fig.tight_layout()
    path = folder / f"{analysis.method}-layers.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    if analysis.features is not None:
        values = np.asarray(analysis.features)
        order = np.argsort(values)[::-1][:30]
        feature_names = analysis.feature_names or [str(i) for i in range(len(values))]
        fig, ax = plt.subplots(figsize=(8, max(2.5, 0.3 * len(order) + 1)))
        ax.barh([feature_names[i] for i in order][::-1], values[order][::-1], color="#dd8452")
        ax.set_xlabel(
            "importance (mean |SHAP|, nats)" if analysis.method == "shap" else "importance"
        )
        ax.set_title(f"{analysis.method}: input features, most important at the top")
        fig.tight_layout()
        path = folder / f"{analysis.method}-features.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _units(indices: list[int], scores: list[float]) -> str:
    return " ".join(f"{i}:{scores[i]:.2g}" for i in indices)
