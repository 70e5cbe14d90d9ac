"""The report: one self-contained ``report.html`` (works offline) and PNGs of the key plots.

It shows the leaderboard, the optimization history, the parameter importances, accuracy against
model size with its front, the SHAP layer and feature importances, and the learning curve and
errors of the exported trial (named in the headline beside the top one). Plotly draws the HTML
plots (its JavaScript is inlined once); ``results.charts`` draws the PNGs with matplotlib, from
the same data (``results.study_data``).
"""

from __future__ import annotations

import copy
import html
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from autotune.paths import (
    analysis_dir,
    check_folder,
    export_dir,
    report_dir,
    report_html,
    write_atomically,
    write_text_atomically,
)
from autotune.rank.analysis import Analysis
from autotune.results.cells import KEY_PARAMS
from autotune.results.charts import analysis_charts, plot_analysis, plot_study
from autotune.results.errors import GRID, errors_html
from autotune.results.leaderboard import Leaderboard
from autotune.results.study_data import (
    AXES,
    completed,
    shown_trial,
    size_axis,
    size_front,
    size_points,
)
from autotune.search.record import TrialRecord, built_params
from autotune.search.selection import BEST_EXPORT, exported_trial
from autotune.search.study import best_trial, load_study, metric_sign, study_record

if TYPE_CHECKING:
    from optuna.importance import BaseImportanceEvaluator


@dataclass
class Report:
    html: Path
    pngs: list[Path]


def write_report(out: Path, storage: str | None = None, study_name: str | None = None) -> Report:
    """Write ``OUT/report.html`` and ``OUT/report/*.png`` for the study in ``out``."""
    study = load_study(storage, out, study_name)  # a mistyped --storage is the first news
    check_folder(out, "the report's folder")  # before the page takes seconds to render
    record = study_record(study)
    metric = record["settings"]["metric"]
    sources = sorted(analysis_dir(out).glob("*.json"))
    analyses = [Analysis.load(p) for p in sources]
    sections = _sections(study, metric, analyses, export_dir(out, None) / GRID)
    page = _page(study, record, sections)
    path = report_html(out)
    write_text_atomically(path, page)
    pngs = plot_study(study, metric, report_dir(out))
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
    return [_copy(p, folder / p.name) for p in drawn]


def _copy(source: Path, target: Path) -> Path:
    with source.open("rb") as read:
        write_atomically(target, lambda f: shutil.copyfileobj(read, f))
    return target


# -- HTML ------------------------------------------------------------------------------------


def _sections(
    study: optuna.Study, metric: str, analyses: list[Analysis], grid: Path | None = None
) -> list[tuple[str, str]]:
    import plotly.graph_objects as go

    _import_importance()  # before optuna.visualization imports it with scikit-learn
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
    points = size_points(study)
    if points:
        edge = size_front(study, points)
        fig = go.Figure()
        fig.add_scatter(
            x=[p[0] for p in points],
            y=[p[1] for p in points],
            mode="markers",
            name="trials",
            text=[f"trial {p[2]}" for p in points],
        )
        fig.add_scatter(
            x=[p[0] for p in edge],
            y=[p[1] for p in edge],
            mode="lines+markers",
            name="front",
            line={"shape": "hv"},
        )
        axis = size_axis(study)
        fig.update_layout(xaxis_title=axis, yaxis_title=f"validation {metric}")
        size = "model size" if axis == AXES["params"] else axis
        figures.append((f"{metric.capitalize()} vs {size}", fig))
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
    shown, which = shown_trial(study)
    history = TrialRecord.from_trial(shown).history if shown is not None else None
    if shown is not None and history:
        epochs = list(range(1, len(history) + 1))
        fig = go.Figure()
        for key in history[0]:
            fig.add_scatter(x=epochs, y=[h[key] for h in history], mode="lines+markers", name=key)
        fig.update_layout(xaxis_title="epoch")
        figures.append((f"{which.capitalize()} trial ({shown.number}): learning curve", fig))
    sections = [("Leaderboard", _leaderboard_html(study, metric))]
    errors = study.user_attrs.get(BEST_EXPORT, {}).get("errors")
    exported = exported_trial(study)
    title = "Errors" + (f" of the exported trial ({exported})" if exported is not None else "")
    sections.append(
        (f"{title}: fixed and broken against the source model", errors_html(errors, grid))
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
    for t in completed(study):
        if t.params:  # the unchanged model (trial 0) samples nothing
            stages.setdefault(TrialRecord.from_trial(t).stage or 0, []).append(t)
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
        # PED-ANOVA scores a parameter by how it sets the best trials apart, best meaning low.
        low = _negated(target) if metric_sign(study) > 0 else target
        try:
            with warnings.catch_warnings():  # that low is best, said above: not the user's news
                warnings.filterwarnings("ignore", "PedAnovaImportanceEvaluator computes")
                fig = optuna.visualization.plot_param_importances(
                    one_stage, evaluator=_ped_anova(), params=shared, target=low, target_name=name
                )
            figures.append((title, fig))
        except (ValueError, RuntimeError) as e:
            figures.append((title, f"not available: {e}"))
    return figures


def _negated(target: Callable[[FrozenTrial], float]) -> Callable[[FrozenTrial], float]:
    return lambda t: -target(t)


def _ped_anova() -> BaseImportanceEvaluator:
    """Optuna's PED-ANOVA evaluator: closed-form, deterministic, and free of scikit-learn."""
    _import_importance()
    from optuna.importance import PedAnovaImportanceEvaluator

    return PedAnovaImportanceEvaluator()


def _import_importance() -> None:
    """Import ``optuna.importance`` (``optuna.visualization`` does too) without scikit-learn.

    It imports its fANOVA evaluator, which imports scikit-learn (about a second, longer than a
    small search's trials) that this report never uses. Optuna imports it inside
    ``try_import``, so hiding it for that one import leaves fANOVA unusable in this process,
    and scikit-learn importable by anything else.
    """
    if "optuna.importance" in sys.modules or "sklearn" in sys.modules:
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # makes `import sklearn` fail
    try:
        import optuna.importance  # noqa: F401
    finally:
        del sys.modules["sklearn"]


def _in_memory(study: optuna.Study, trials: list[FrozenTrial]) -> optuna.Study:
    """A study in memory holding ``trials``, created without Optuna's INFO line about it."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        held = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    # What each trial built: a ratio raised to fit a size budget is the one it trained.
    held.add_trials([_as_built(t) for t in trials])
    return held


def _as_built(trial: FrozenTrial) -> FrozenTrial:
    fitted = built_params(trial)
    if fitted == trial.params:
        return trial
    built = copy.copy(trial)
    built.params = fitted  # the raised values are ones the space samples (``allowed``)
    return built


def _leaderboard_html(study: optuna.Study, metric: str) -> str:
    """The top 25 rows of ``leaderboard.csv``, its main columns, as an HTML table."""
    records = Leaderboard.from_study(study, metric).records()[:25]
    shown = ["rank", "trial", "state", "value", "gain", "fixed", "broken", "total_params", "macs"]
    shown += ["latency_ms", "latency_ratio", "latency_ratio_spread", "epochs", "seconds"]
    shown += [f"param_{p}" for p in KEY_PARAMS[:9]]
    columns = [c for c in shown if any(c in r for r in records)]
    head = "".join(f"<th>{html.escape(c.removeprefix('param_'))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in records
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f"<div class=wide>{table}</div>"


def _cell(value: object) -> str:
    if value is None:
        return ""
    return html.escape(f"{value:.4g}" if isinstance(value, float) else str(value))


def _page(study: optuna.Study, record: dict[str, Any], sections: list[tuple[str, str]]) -> str:
    from plotly.offline import get_plotlyjs

    model, data = record["model"], record["data"]
    best = best_trial(study)
    exported = exported_trial(study)
    chosen = f", exported trial {exported}" if exported is not None else ""
    if exported is not None:
        values = study.trials[exported].values
        chosen += f" ({values[0]:.4f})" if values else ""
    top = f", top trial {best.number} ({best.values[0]:.4f})" if best is not None else ""
    if best is not None and best.number == exported:
        top = ", the top one on validation"
    summary = (
        f"model <code>{html.escape(str(model.get('path')))}</code> ({model.get('format')}), "
        f"data <code>{html.escape(str(data.get('spec')))}</code>, "
        f"{len(study.trials) - 1} trials{chosen}{top}"
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
