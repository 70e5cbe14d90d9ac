"""Opening the study's storage (``search/storage.py``): what a user is told when it cannot be."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
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


def _damaged_journal(slimmed_study: Path, out: Path) -> Path:
    """The search's journal with a line in its middle overwritten, as a bad disk leaves it."""
    damaged = out / "study.journal"
    shutil.copy(slimmed_study / "study.journal", damaged)
    with damaged.open("r+b") as f:
        f.seek(damaged.stat().st_size // 3)
        f.write(b"\x00" * 64)
    return damaged


def _damaged_sqlite(slimmed_study: Path, out: Path) -> Path:
    """A study.db (the default before the journal) cut short."""
    import optuna

    damaged = out / "study.db"
    study = optuna.create_study(storage=f"sqlite:///{damaged}")
    for _ in range(40):
        trial = study.ask()
        trial.set_user_attr("history", list(range(100)))
        study.tell(trial, 0.5)
    with damaged.open("r+b") as f:
        f.truncate(damaged.stat().st_size // 3)
    return damaged


def _unknown_operation(slimmed_study: Path, out: Path) -> Path:
    """The search's journal with a line in its middle that no Optuna writes."""
    damaged = out / "study.journal"
    lines = (slimmed_study / "study.journal").read_bytes().splitlines(keepends=True)
    middle = len(lines) // 2
    damaged.write_bytes(
        b"".join([*lines[:middle], b'{"op_code":99,"worker_id":"w"}\n', *lines[middle:]])
    )
    return damaged


@pytest.mark.parametrize("damage", [_damaged_journal, _unknown_operation, _damaged_sqlite])
def test_a_damaged_study_file_is_named_with_what_to_do(
    damage: Callable[[Path, Path], Path], slimmed_study: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    damaged = damage(slimmed_study, out)
    line = _search(out)
    assert f"the study file {str(damaged)!r} is damaged" in line
    assert "restore it from a copy, or move it aside" in line
    assert "URL" not in line and "driver" not in line  # not a server's problem
    # Refused before the model loaded: no analysis was written beside it.
    assert sorted(p.name for p in out.iterdir()) == [damaged.name]


def test_a_study_file_that_cannot_be_read_is_named_with_what_to_do(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "study.journal").mkdir(parents=True)
    line = _search(out)
    assert f"cannot open the study file {str(out / 'study.journal')!r} (" in line
    assert "Is a directory" in line and "make it a file this user can read and write" in line
    assert "URL" not in line and "driver" not in line  # not a server's problem
    assert sorted(p.name for p in out.iterdir()) == ["study.journal"]  # before the model loaded


def test_an_unreachable_server_leaves_no_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "never"
    line = _search(out, "--storage", "postgresql://nobody@127.0.0.1:1/none")
    assert "cannot open storage 'postgresql://nobody@127.0.0.1:1/none'" in line
    assert not out.exists()
