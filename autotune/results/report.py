"""The report: one self-contained ``report.html`` (works offline) and PNGs of the key plots.

It shows the leaderboard, the optimization history, the parameter importances, accuracy against
model size with its front, the SHAP layer and feature importances, and the best trial's learning
curve. Plotly draws the HTML plots (its JavaScript is inlined once); matplotlib draws the PNGs.
"""

from __future__ import annotations

import html
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.paths import analysis_dir, export_dir, report_dir, report_html
from autotune.rank.analysis import Analysis
from autotune.results.cells import KEY_PARAMS
from autotune.results.charts import analysis_charts, plot_analysis, save_figure
from autotune.results.errors import GRID, errors_html
from autotune.results.leaderboard import Leaderboard
from autotune.search.study import best_trial, load_study, metric_sign, study_record


@dataclass
class Report:
    html: Path
    pngs: list[Path]


def write_report(out: Path, storage: str | None = None, study_name: str | None = None) -> Report:
    """Write ``OUT/report.html`` and ``OUT/report/*.png`` for the study in ``out``."""
    study = load_study(storage, out, study_name)
    record = study_record(study)
    metric = record["settings"]["metric"]
    sources = sorted(analysis_dir(out).glob("*.json"))
    analyses = [Analysis.load(p) for p in sources]
    sections = _sections(study, metric, analyses, export_dir(out, None) / GRID)
    page = _page(study, record, sections)
    path = report_html(out)
    path.write_text(page, encoding="utf-8")
    pngs = _pngs(study, metric, report_dir(out))
    for source, analysis in zip(sources, analyses, strict=True):
        pngs += _analysis_pngs(source, analysis, report_dir(out))
    return Report(path, pngs)


def _analysis_pngs(source: Path, analysis: Analysis, folder: Path) -> list[Path]:
    """The charts of the analysis saved in ``source``: copies of those the search drew beside
    it (matplotlib draws slowly), or drawn afresh where they are missing or older than it."""
    drawn = analysis_charts(analysis, source.parent)
    if not all(p.exists() and p.stat().st_mtime >= source.stat().st_mtime for p in drawn):
        return plot_analysis(analysis, folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(p, folder / p.name)) for p in drawn]


# -- data ------------------------------------------------------------------------------------


def _completed(study: optuna.Study) -> list[FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None
    ]


def _front(points: list[tuple[float, float, int]], s: float) -> list[tuple[float, float, int]]:
    """Points (size, metric, trial) not beaten by a smaller-or-equal, better-or-equal one.

    ``s`` is the metric's sign (``config.sign``). A single-objective study has no Pareto front
    of its own (``study.best_trials`` is its best trial), so the size front is computed here.
    """
    ordered = sorted(points, key=lambda p: (p[0], -s * p[1]))
    front: list[tuple[float, float, int]] = []
    for point in ordered:
        if not front or s * (point[1] - front[-1][1]) > 0:
            front.append(point)
    return front


def _size_points(study: optuna.Study) -> list[tuple[float, float, int]]:
    return [
        (float(t.user_attrs["total_params"]), t.values[0], t.number)
        for t in _completed(study)
        if "total_params" in t.user_attrs
    ]


# -- HTML ------------------------------------------------------------------------------------


def _sections(
    study: optuna.Study, metric: str, analyses: list[Analysis], grid: Path | None = None
) -> list[tuple[str, str]]:
    import plotly.graph_objects as go

    figures: list[tuple[str, Any]] = []
    name = f"validation {metric}"

    def first(t: FrozenTrial) -> float:
        return float(t.values[0])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = optuna.visualization.plot_optimization_history(
            study, target=first, target_name=name
        )
        figures.append(("Optimization history", history))
        figures += _importances(study, first, name)
    points = _size_points(study)
    if points:
        front = _front(points, metric_sign(study))
        fig = go.Figure()
        fig.add_scatter(
            x=[p[0] for p in points],
            y=[p[1] for p in points],
            mode="markers",
            name="trials",
            text=[f"trial {p[2]}" for p in points],
        )
        fig.add_scatter(
            x=[p[0] for p in front],
            y=[p[1] for p in front],
            mode="lines+markers",
            name="front",
            line={"shape": "hv"},
        )
        fig.update_layout(xaxis_title="parameters", yaxis_title=f"validation {metric}")
        figures.append((f"{metric.capitalize()} vs model size", fig))
    for analysis in analyses:
        scores = analysis.layers or {
            name: sum(values) / len(values) for name, values in analysis.channels.items()
        }
        fig = go.Figure(go.Bar(x=list(scores.values()), y=list(scores), orientation="h"))
        what = "error score" if analysis.layers else "mean channel importance"
        fig.update_layout(xaxis_title=what, yaxis={"autorange": "reversed"})
        figures.append((f"{analysis.method}: layers ({what})", fig))
        if analysis.features is not None:
            names = analysis.feature_names or [str(i) for i in range(len(analysis.features))]
            order = sorted(range(len(names)), key=lambda i: -analysis.features[i])[:30]  # type: ignore[index]
            fig = go.Figure(
                go.Bar(
                    x=[analysis.features[i] for i in order],
                    y=[names[i] for i in order],
                    orientation="h",
                )
            )
            fig.update_layout(xaxis_title="importance", yaxis={"autorange": "reversed"})
            figures.append((f"{analysis.method}: input features", fig))
    best = best_trial(study)
    history = best.user_attrs.get("history") if best is not None else None
    if best is not None and history:
        epochs = list(range(1, len(history) + 1))
        fig = go.Figure()
        for key in history[0]:
            fig.add_scatter(x=epochs, y=[h[key] for h in history], mode="lines+markers", name=key)
        fig.update_layout(xaxis_title="epoch")
        figures.append((f"Best trial ({best.number}): learning curve", fig))
    sections = [("Leaderboard", _leaderboard_html(study, metric))]
    errors = study.user_attrs.get("best_export", {}).get("errors")
    sections.append(
        ("Errors: fixed and broken against the source model", errors_html(errors, grid))
    )
    for title, fig in figures:
        if isinstance(fig, str):
            sections.append((title, f"<p class=note>{html.escape(fig)}</p>"))
        else:
            fig.update_layout(height=380, margin={"l": 60, "r": 20, "t": 30, "b": 50})
            body = fig.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True})
            sections.append((title, f"<div class=plot>{body}</div>"))
    return sections


_STAGE_TITLES = {0: "", 1: ", stage 1 (tuning the full model)", 2: ", stage 2 (slimming)"}


def _importances(
    study: optuna.Study, target: Callable[[FrozenTrial], float], name: str
) -> list[tuple[str, Any]]:
    """Parameter importances for each stage, over that stage's trials and the parameters every
    one of them sampled.

    Why not one chart over the study: Optuna's evaluator scores every parameter any trial has,
    so parameters sampled by a few trials only (``momentum`` for SGD, ``label_smoothing`` for
    that loss) and the two stages' different parameters came out on top by accident.
    """
    stages: dict[int, list[FrozenTrial]] = {}
    for t in _completed(study):
        if t.params:  # the unchanged model (trial 0) samples nothing
            stages.setdefault(int(t.user_attrs.get("stage", 0)), []).append(t)
    figures: list[tuple[str, Any]] = []
    for stage, trials in sorted(stages.items()):
        title = "Parameter importances" + _STAGE_TITLES.get(stage, f", stage {stage}")
        shared = sorted(
            n
            for n in set.intersection(*(set(t.distributions) for t in trials))
            if not trials[0].distributions[n].single()  # a fixed choice explains nothing
        )
        if len(trials) < 2 or not shared:
            why = "fewer than two trials" if len(trials) < 2 else "no parameter all trials share"
            figures.append((title, f"not available: {why}"))
            continue
        one_stage = _in_memory(study, trials)
        try:
            fig = optuna.visualization.plot_param_importances(
                one_stage, params=shared, target=target, target_name=name
            )
            figures.append((title, fig))
        except (ValueError, RuntimeError) as e:
            figures.append((title, f"not available: {e}"))
    return figures


def _in_memory(study: optuna.Study, trials: list[FrozenTrial]) -> optuna.Study:
    """A study in memory holding ``trials``, created without Optuna's INFO line about it."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        copy = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    copy.add_trials(trials)
    return copy


def _leaderboard_html(study: optuna.Study, metric: str) -> str:
    frame = Leaderboard.from_study(study, metric).to_frame()
    shown = ["rank", "trial", "state", "value", "gain", "fixed", "broken", "total_params", "macs"]
    shown += ["latency_ms", "latency_ratio", "latency_ratio_spread", "epochs", "seconds"]
    shown += [f"param_{p}" for p in KEY_PARAMS[:8]]
    frame = frame[[c for c in shown if c in frame.columns]].head(25)
    frame.columns = [c.removeprefix("param_") for c in frame.columns]
    table = frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0)
    return f"<div class=wide>{table}</div>"


def _page(study: optuna.Study, record: dict[str, Any], sections: list[tuple[str, str]]) -> str:
    from plotly.offline import get_plotlyjs

    model, data = record["model"], record["data"]
    best = best_trial(study)
    summary = (
        f"model <code>{html.escape(str(model.get('path')))}</code> ({model.get('format')}), "
        f"data <code>{html.escape(str(data.get('spec')))}</code>, "
        f"{len(study.trials) - 1} trials"
        + (f", best trial {best.number} ({best.values[0]:.4f})" if best is not None else "")
    )
    body = "\n".join(
        f"<section><h2>{html.escape(title)}</h2>{content}</section>" for title, content in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>autotune report: {html.escape(study.study_name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ font-size: 1.2em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ padding: 3px 8px; text-align: right; border-bottom: 1px solid #eee; }}
.note {{ color: #777; }} .plot {{ min-height: 380px; }} .wide {{ overflow-x: auto; }}
</style>
<script>{get_plotlyjs()}</script>
</head><body>
<h1>autotune report: study {html.escape(study.study_name)}</h1>
<p>{summary}. Written {time.strftime("%Y-%m-%d %H:%M")}.</p>
{body}
</body></html>
"""


# -- PNGs ------------------------------------------------------------------------------------


def _pngs(study: optuna.Study, metric: str, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    completed = _completed(study)
    if completed:
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = [t.number for t in completed]
        ys = [t.values[0] for t in completed]
        ax.plot(xs, ys, "o", label="trial")
        best: list[float] = []
        for y in ys:
            best.append(y if not best else (max if metric_sign(study) > 0 else min)(best[-1], y))
        ax.plot(xs, best, "-", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"validation {metric}")
        ax.legend()
        written.append(save_figure(fig, folder / "history.png"))
    points = _size_points(study)
    if points:
        front = _front(points, metric_sign(study))
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([p[0] for p in points], [p[1] for p in points], "o", alpha=0.6, label="trials")
        ax.step([p[0] for p in front], [p[1] for p in front], "-", where="post", label="front")
        ax.set_xlabel("parameters")
        ax.set_ylabel(f"validation {metric}")
        ax.legend()
        written.append(save_figure(fig, folder / "size_front.png"))
    best_t = best_trial(study)
    history = best_t.user_attrs.get("history") if best_t is not None else None
    if best_t is not None and history:
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in history[0]:
            ax.plot(range(1, len(history) + 1), [h[key] for h in history], "o-", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(f"best trial {best_t.number}")
        ax.legend()
        written.append(save_figure(fig, folder / "learning_curve.png"))
    return written
