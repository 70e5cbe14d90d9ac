"""Charts of an analysis and of a study, drawn with matplotlib into PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from autotune.rank.analysis import Analysis


def analysis_charts(analysis: Analysis, folder: Path) -> list[Path]:
    """The files ``plot_analysis`` writes for ``analysis`` in ``folder``."""
    kinds = ["layers"] + (["features"] if analysis.features is not None else [])
    return [folder / f"{analysis.method}-{kind}.png" for kind in kinds]


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
            analysis_charts(analysis, folder)[0],
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
                analysis_charts(analysis, folder)[1],
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
