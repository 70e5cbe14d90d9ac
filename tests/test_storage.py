"""Opening the study's storage (``search/storage.py``): what a user is told when it cannot be."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from autotune.cli import app


def _search(out: Path, *flags: str) -> str:
    args = ["search", "--model", "demo", "--trials", "1", "--out", str(out), *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_a_damaged_study_file_is_named_with_what_to_do(slimmed_study: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    damaged = out / "study.db"
    shutil.copy(slimmed_study / "study.db", damaged)
    with damaged.open("r+b") as f:
        f.truncate(damaged.stat().st_size // 3)
    line = _search(out)
    assert f"the study file {str(damaged)!r} is damaged" in line
    assert "restore it from a copy, or move it aside" in line
    assert "URL" not in line and "driver" not in line  # not a server's problem
    # Refused before the model loaded: no analysis was written beside it.
    assert sorted(p.name for p in out.iterdir()) == ["study.db"]


def test_an_unreachable_server_leaves_no_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "never"
    line = _search(out, "--storage", "postgresql://nobody@127.0.0.1:1/none")
    assert "cannot open storage 'postgresql://nobody@127.0.0.1:1/none'" in line
    assert not out.exists()
