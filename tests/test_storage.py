"""Opening the study's storage (``search/storage.py``): what a user is told when it cannot be."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autotune.cli import app
from autotune.search.study import load_study


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


def _bad_last_line(slimmed_study: Path, out: Path) -> Path:
    """The search's journal whose last line, newline and all, is no record: Optuna's reader
    skips such a last line, and the first write after it made the file unreadable."""
    damaged = out / "study.journal"
    damaged.write_bytes((slimmed_study / "study.journal").read_bytes() + b"garbage{\n")
    return damaged


def _no_journal(slimmed_study: Path, out: Path) -> Path:
    """A one-line text file where the study file should be."""
    damaged = out / "study.journal"
    damaged.write_bytes(b"garbage{\n")
    return damaged


@pytest.mark.parametrize(
    "damage",
    [_damaged_journal, _unknown_operation, _damaged_sqlite, _bad_last_line, _no_journal],
)
def test_a_damaged_study_file_is_named_with_what_to_do(
    damage: Callable[[Path, Path], Path], slimmed_study: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    damaged = damage(slimmed_study, out)
    before = damaged.read_bytes()
    line = _search(out)
    assert f"the study file {str(damaged)!r} is damaged" in line
    assert "restore it from a copy, or move it aside" in line
    assert "URL" not in line and "driver" not in line  # not a server's problem
    # Refused before the model loaded: no analysis was written beside it, nor a line after.
    assert sorted(p.name for p in out.iterdir()) == [damaged.name]
    assert damaged.read_bytes() == before


def test_a_journal_of_one_long_record_is_read_whole(tmp_path: Path) -> None:
    """The last line is found however long it is: a line longer than the first chunk read."""
    from autotune.search.journal import _last_line

    journal = tmp_path / "study.journal"
    journal.write_bytes(b'{"op_code":0}\n' + b'{"op_code":1,"x":"' + b"y" * 300_000 + b'"}\n')
    assert _last_line(journal, chunk=1024) == b'{"op_code":1,"x":"' + b"y" * 300_000 + b'"}\n'
    journal.write_bytes(b'{"op_code":0}\n{"op_code":1}\n{"op_c')  # a write cut short
    assert _last_line(journal, chunk=4) == b'{"op_code":1}\n'


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


def test_a_sqlite_file_in_a_missing_folder_is_named_before_the_model_loads(tmp_path: Path) -> None:
    out, folder = tmp_path / "out", tmp_path / "nodir"
    line = _search(out, "--storage", f"sqlite:///{folder}/x.db")
    assert f"there is no folder {str(folder)!r} for its database file" in line
    assert "create the folder, or fix the path" in line
    assert "lost" not in line and "finished trials" not in line  # not an outage: nothing ran
    assert not out.exists() and not folder.exists()


def _journal_of(slimmed_study: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    journal = out / "study.journal"
    shutil.copy(slimmed_study / "study.journal", journal)
    return journal


def test_a_journal_whose_last_write_was_cut_short_is_mended_and_written_on(
    slimmed_study: Path, tmp_path: Path
) -> None:
    journal = _journal_of(slimmed_study, tmp_path / "out")
    whole = journal.read_bytes()
    last = whole.rstrip(b"\n").rfind(b"\n") + 1
    journal.write_bytes(whole[: last + 20])  # kill -9 in the middle of the last append
    seen = load_study(None, tmp_path / "out").get_trials()  # readers skip the cut line
    study = load_study(None, tmp_path / "out")
    study.set_user_attr("written_after", 1)  # appended after the cut line, not glued onto it
    again = load_study(None, tmp_path / "out")
    assert again.user_attrs["written_after"] == 1
    assert [t.state for t in again.get_trials()] == [t.state for t in seen]
    assert journal.read_bytes().startswith(whole[:last]) and journal.read_bytes().endswith(b"\n")
    assert not Path(f"{journal}.lock").exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(
    slimmed_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autotune.search import journal as module

    monkeypatch.setattr(module, "LOCK_GRACE_S", 3)
    journal = _journal_of(slimmed_study, tmp_path / "out")
    Path(f"{journal}.lock").touch()  # as a process killed during an append leaves it
    done: list[int] = []

    def write() -> None:
        study = load_study(None, tmp_path / "out")
        study.set_user_attr("written_after", 1)
        done.append(load_study(None, tmp_path / "out").user_attrs["written_after"])

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(timeout=60)  # never returning was the failure: a wait without end
    assert done == [1]
    assert not Path(f"{journal}.lock").exists()


def test_a_lock_that_links_to_nothing_is_named_with_what_to_do(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.journal").touch()
    (out / "study.journal.lock").symlink_to(tmp_path / "gone")
    line = _search(out)
    assert f"the study file's lock {str(out / 'study.journal.lock')!r} is a link to nothing" in line
    assert "delete it and run the same command again" in line


def test_a_file_that_is_no_journal_given_as_storage_is_refused_and_left_whole(
    tmp_path: Path,
) -> None:
    import torch

    data = tmp_path / "data.pt"  # the user's data file, given as --storage by mistake
    torch.save({"x_train": torch.zeros(4, 8), "y_train": torch.zeros(4)}, data)
    before = data.read_bytes()
    assert not before.endswith(b"\n")  # as a journal's torn last line would end
    error = _search(tmp_path / "out", "--storage", str(data))
    assert "is damaged" in error
    assert data.read_bytes() == before  # its bytes after the last newline were cut off


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_a_database_in_memory_is_refused_before_the_search(tmp_path: Path, url: str) -> None:
    # It ran, and the report (and any rerun or export) found no study.
    error = _search(tmp_path / "out", "--storage", url)
    assert error.startswith(f"error: --storage '{url}' is a database in memory")
    assert not (tmp_path / "out").exists()
