"""What a finished (or interrupted) search writes from its study: the leaderboard, the best
model's bundle, the report and the files the dashboard shows; each that can be, with a line
saying why for each that cannot."""

from __future__ import annotations

from pathlib import Path

import optuna

from autotune.errors import first_line
from autotune.paths import analysis_dir, leaderboard_csv
from autotune.results.artifacts import attach
from autotune.results.bundle_files import bundle
from autotune.results.charts import plot_analysis
from autotune.results.export import ExportResult, Workspace, export_trial, write_leaderboard
from autotune.results.finalists import choose
from autotune.results.pick import any_trained
from autotune.results.report import write_report
from autotune.search.outage import raise_outage
from autotune.search.prepare import study_checkpoints
from autotune.search.record import TrialRecord
from autotune.search.runner import Search


def finish(run: Search, study: optuna.Study) -> tuple[ExportResult | None, Path | None]:
    """Write the leaderboard, the best bundle and the report: each that can be, with a line
    saying why for each that cannot. A full disk or a lost storage, which would fail every
    one of them, ends it with that one line instead (``search.outage``)."""
    try:
        write_leaderboard(study, run.settings.metric, leaderboard_csv(run.settings.out))
    except Exception as e:
        raise_outage(e)
        run.console.print(f"note: leaderboard.csv not written ({first_line(e)})")
    best = None
    if not any_trained(study):
        run.console.print("nothing exported: no trial completed besides the baseline")
    else:
        _finalists(run, study)
        try:
            best = export_trial(workspace(run), study, refit=run.settings.refit)
        except Exception as e:
            raise_outage(e)
            run.console.print(f"nothing exported: {first_line(e)}", highlight=False)
    if best is not None:
        keep = {best.trial}
        if len(study.directions) > 1:
            keep |= {t.number for t in study.best_trials}
        # A stage-2 trial is rebuilt from its parent's weights.
        parents = (TrialRecord.from_trial(study.trials[n]).parent for n in keep)
        keep |= {p for p in parents if p is not None}
        study_checkpoints(run.settings, study).prune(keep)
    return best, _publish(run, study, best)


def _finalists(run: Search, study: optuna.Study) -> None:
    """Train the finalists again with fresh seeds and record the choice the export reads."""
    if run.settings.finalists < 1:
        return
    try:
        with run.console.status("training the finalists again with fresh seeds"):
            choose(
                workspace(run),
                study,
                run.settings.finalists,
                say=lambda line: run.console.print(line, highlight=False),
            )
    except Exception as e:  # the export falls back to the top trial
        raise_outage(e)
        run.console.print(
            f"note: finalists not compared ({first_line(e)}); --select chooses the export"
        )


def workspace(run: Search) -> Workspace:
    """What export needs of a finished search (its fitted space, rankings and measurements)."""
    checkpoints = study_checkpoints(run.settings, run.study)
    return Workspace(run.job, run.space, run.settings, run.maker, checkpoints, run.original)


def _publish(run: Search, study: optuna.Study, best: ExportResult | None) -> Path | None:
    """Draw the analyses' charts, attach the files to the study for the dashboard, and write
    the report.

    All come after the study's results are stored and exported: a failure here is reported
    in one line and loses nothing.
    """
    out = run.settings.out
    try:
        for analysis in run.analyses.values():
            plot_analysis(analysis, analysis_dir(out))
        if best is not None:
            # Named so that the dashboard says which trial best/ holds.
            # The bundle's own files: not whatever else the user keeps in that folder.
            files = [best.folder / name for name in bundle(best.config)]
            attach(study, files, out, prefix=f"exported-trial_{best.trial}-")
        attach(study, sorted(analysis_dir(out).glob("*")), out)
    except Exception as e:
        raise_outage(e)
        run.console.print(f"note: files not attached for the dashboard: {first_line(e)}")
    try:
        return write_report(out, run.settings.storage, run.settings.study_name).html
    except Exception as e:
        raise_outage(e)
        run.console.print(f"note: report not written ({first_line(e)}); try `autotune report`")
        return None
