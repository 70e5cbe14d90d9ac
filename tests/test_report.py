"""`autotune report`: one offline HTML file whose plots draw in a real browser, and PNGs."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from autotune.cli import app
from autotune.results.errors import errors_html, sample_grid
from autotune.trial.flips import count_flips

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("AUTOTUNE_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (AUTOTUNE_REQUIRE_BROWSER is set) but missing")
        pytest.skip("no chromium on this machine (.ci/run installs Debian's chromium package)")
    return found


def test_report_command_writes_an_offline_page_and_pngs(slimmed_study: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(slimmed_study)])
    assert result.exit_code == 0, result.output
    page = (slimmed_study / "report.html").read_text()
    # Offline: nothing is fetched, the plotting library is inlined.
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"http", page)
    for title in (
        "Leaderboard",
        "Optimization history",
        "Parameter importances",
        "Accuracy vs model size",
        "shap: layers",
        "learning curve",
        "fixed and broken against the source model",
    ):
        assert title in page
    # What the page describes is the trial in best/, named as such beside the top one.
    exported = yaml.safe_load((slimmed_study / "best" / "config.yaml").read_text())["trial"]
    assert f"trials, exported trial {exported} (" in page
    assert f"Exported trial ({exported}): learning curve" in page
    assert f"Errors of the exported trial ({exported}): fixed and broken" in page
    assert "validation split:" in page and "test split:" in page  # the exported model's
    pngs = {p.name for p in (slimmed_study / "report").glob("*.png")}
    assert {"history.png", "size_front.png", "learning_curve.png", "shap-layers.png"} <= pngs


def test_report_draws_its_plots_in_headless_chromium(slimmed_study: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    page = slimmed_study / "report.html"
    done = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console  # no JavaScript errors, nor anything else logged
    dom = done.stdout
    plots = page.read_text().count('class="plotly-graph-div"')
    assert plots >= 5
    # Plotly replaces each empty div with its drawn SVG: one main-svg layer per plot at least.
    assert len(re.findall(r'class="main-svg"', dom)) >= plots
    assert len(re.findall(r'class="plot-container plotly"', dom)) == plots
    # The errors section: the fixed/broken matrix and per-class accuracy, before and after.
    assert dom.count('class="flips"') == 2 and dom.count('class="per-class"') == 2


def test_the_errors_grid_draws_fixed_and_broken_samples_in_headless_chromium(
    tmp_path: Path,
) -> None:
    chromium = _chromium()
    x = torch.rand(6, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    before = torch.tensor([0, 1, 2, 0, 2, 2])
    after = torch.tensor([0, 1, 2, 1, 1, 2])
    grid = sample_grid(x, before, after, y, ["zero", "one", "two"], [4], [3], tmp_path / "g.png")
    assert grid is not None
    flips = count_flips(before, after, y, ["zero", "one", "two"])
    errors = {"validation": flips.attrs()}
    page = tmp_path / "errors.html"
    # The page reports the decoded image's width: 0 (or nothing) if it did not load.
    page.write_text(
        "<!DOCTYPE html><html><body>"
        + errors_html(errors, grid)
        + "<p id=w></p><script>window.onload = () => { document.getElementById('w').textContent"
        " = 'width ' + document.querySelector('img.grid').naturalWidth; };</script></body></html>"
    )
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    width = re.search(r"width (\d+)", done.stdout)
    assert width is not None and int(width.group(1)) > 100, done.stdout[-500:]
    assert "1 errors fixed, 1 broken" in done.stdout


def test_the_report_copies_the_analysis_charts_unless_they_are_stale(
    slimmed_study: Path, tmp_path: Path
) -> None:
    from autotune.results.report import write_report

    out = tmp_path / "out"
    shutil.copytree(slimmed_study, out)
    drawn = out / "analysis" / "shap-layers.png"
    write_report(out)
    shown = out / "report" / "shap-layers.png"
    assert shown.read_bytes() == drawn.read_bytes()
    # A chart older than its analysis (a later run analysed again) is drawn afresh.
    drawn.write_bytes(b"stale")
    os.utime(drawn, (0, 0))
    pngs = {p.name for p in write_report(out).pngs}
    assert shown.read_bytes().startswith(b"\x89PNG")
    assert {"history.png", "learning_curve.png", "shap-layers.png"} <= pngs


@pytest.mark.parametrize("where", ["missing", "a_file", "read_only"])
def test_a_report_folder_that_cannot_be_written_is_refused_in_one_line_before_any_drawing(
    where: str, tmp_path: Path
) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal = tmp_path / "run" / "study.journal"
    journal.parent.mkdir()
    optuna.create_study(storage=JournalStorage(JournalFileBackend(str(journal))))
    folder = tmp_path / where
    if where == "a_file":
        folder.write_text("mine")
    elif where == "read_only":
        if os.geteuid() == 0:
            pytest.skip("root writes in a read-only folder")
        folder.mkdir(mode=0o555)
    result = CliRunner().invoke(app, ["report", str(folder), "--storage", str(journal)])
    assert result.exit_code == 2, result.output
    said = {
        "missing": f"the report's folder {str(folder)!r} does not exist: create it first",
        "a_file": f"the report's folder {str(folder)!r} is a file: give a folder to write to",
        "read_only": f"the report's folder {str(folder)!r} cannot be written (",
    }[where]
    assert said in " ".join(result.output.split()), result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    made = ["run"] if where == "missing" else sorted(["run", where])
    assert sorted(p.name for p in tmp_path.iterdir()) == made  # nothing else written


def test_parameter_importances_are_per_stage_over_the_parameters_every_trial_sampled() -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import create_trial

    from autotune.results.report import _importances

    lr = FloatDistribution(1e-4, 1e-1, log=True)
    optimizer = CategoricalDistribution(["adamw", "sgd"])
    momentum = FloatDistribution(0.8, 0.99)  # sampled by the SGD trials only
    order = CategoricalDistribution(["output"])  # a fixed choice
    prune = FloatDistribution(0.0, 0.9)
    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(value=0.5, user_attrs={"stage": 0}))  # the unchanged model
    for i in range(16):
        params: dict = {"lr": 10 ** (-4 + 3 * i / 15), "optimizer": ["adamw", "sgd"][i % 2]}
        dists: dict = {"lr": lr, "optimizer": optimizer}
        params["unfreeze_order"], dists["unfreeze_order"] = "output", order
        if params["optimizer"] == "sgd":
            params["momentum"], dists["momentum"] = 0.8 + 0.01 * i, momentum
        value = 0.5 + i / 40  # the learning rate decides
        stage = {"stage": 1}
        study.add_trial(
            create_trial(value=value, params=params, distributions=dists, user_attrs=stage)
        )
    for i in range(8):
        params, dists, stage = {"prune": i / 10}, {"prune": prune}, {"stage": 2}
        study.add_trial(
            create_trial(value=0.9 - i / 50, params=params, distributions=dists, user_attrs=stage)
        )

    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append  # type: ignore[method-assign]
    optuna.logging.get_logger("optuna").addHandler(handler)
    try:
        figures = dict(_importances(study, lambda t: t.values[0], "validation accuracy"))
    finally:
        optuna.logging.get_logger("optuna").removeHandler(handler)

    assert not logged, [r.getMessage() for r in logged]  # nothing printed after the search

    assert list(figures) == [
        "Parameter importances, stage 1 (tuning the full model)",
        "Parameter importances, stage 2 (slimming)",
    ]
    one = figures["Parameter importances, stage 1 (tuning the full model)"].data[0]
    scores = dict(zip(one.y, one.x, strict=True))
    assert set(scores) == {"lr", "optimizer"}  # not momentum, nor the fixed order, nor prune
    assert max(scores, key=scores.__getitem__) == "lr"
    two = figures["Parameter importances, stage 2 (slimming)"].data[0]
    assert list(two.y) == ["prune"]


def test_a_stage_with_one_trial_says_why_it_has_no_importances() -> None:
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from autotune.results.report import _importances

    study = optuna.create_study(direction="maximize")
    lr = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    study.add_trial(create_trial(value=0.8, params={"lr": 1e-3}, distributions=lr))
    ((title, figure),) = _importances(study, lambda t: t.values[0], "validation accuracy")
    assert (title, figure) == ("Parameter importances", "not available: fewer than two trials")
