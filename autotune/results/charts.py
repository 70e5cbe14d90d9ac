"""Charts of an analysis and of a study, drawn with matplotlib into PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna

from autotune.paths import write_atomically
from autotune.rank.analysis import Analysis
from autotune.results.study_data import completed, shown_trial, size_axis, size_front, size_points
from autotune.search.record import TrialRecord
from autotune.search.study import metric_sign


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
    """Write a matplotlib figure as a PNG, whole or not at all, and free it."""
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
    return path


def plot_study(study: optuna.Study, metric: str, folder: Path) -> list[Path]:
    """The study's optimization history, accuracy against size with its front, and the
    learning curve of the exported (else the top) trial, as PNGs in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    done = completed(study)
    if done:
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = [t.number for t in done]
        ys = [t.values[0] for t in done]
        ax.plot(xs, ys, "o", label="trial")
        best: list[float] = []
        for y in ys:
            best.append(y if not best else (max if metric_sign(study) > 0 else min)(best[-1], y))
        ax.plot(xs, best, "-", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"validation {metric}")
        ax.legend()
        written.append(save_figure(fig, folder / "history.png"))
    points = size_points(study)
    if points:
        edge = size_front(study, points)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([p[0] for p in points], [p[1] for p in points], "o", alpha=0.6, label="trials")
        ax.step([p[0] for p in edge], [p[1] for p in edge], "-", where="post", label="front")
        ax.set_xlabel(size_axis(study))
        ax.set_ylabel(f"validation {metric}")
        ax.legend()
        written.append(save_figure(fig, folder / "size_front.png"))
    shown, which = shown_trial(study)
    history = TrialRecord.from_trial(shown).history if shown is not None else None
    if shown is not None and history:
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in history[0]:
            ax.plot(range(1, len(history) + 1), [h[key] for h in history], "o-", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(f"{which} trial {shown.number}")
        ax.legend()
        written.append(save_figure(fig, folder / "learning_curve.png"))
    return written
