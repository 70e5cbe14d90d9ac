"""`autotune report`: one offline HTML file whose plots draw in a real browser, and PNGs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autotune.cli import app

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
    ):
        assert title in page
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
