"""A storage password never reaches what is printed or written; what is shared carries no host
name and no path the user did not write."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch
from conftest import NET_SOURCE
from typer.testing import CliRunner

from autotune.cli import app
from autotune.errors import redacted

SECRET = "PLANTED-s3cret"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://bob:pw@db:5432/x", "postgresql://bob:***@db:5432/x"),
        ("--storage mysql+pymysql://u:p/w@h/d -v", "--storage mysql+pymysql://u:***@h/d -v"),
        ("sqlite:///a.db?password=pw&timeout=3", "sqlite:///a.db?password=***&timeout=3"),
        ("sqlite:////abs/study.db", "sqlite:////abs/study.db"),
        # Mistyped URLs and libpq connection strings, which a storage check refuses, printed.
        ("postgresql:/bob:pw@db/x", "postgresql:/bob:***@db/x"),
        ("--storage bob:pw@db/x", "--storage bob:***@db/x"),
        ("'host=db password=pw dbname=x'", "'host=db password=*** dbname=x'"),
        ("host=db password = 'p w'", "host=db password = ***"),
        ("postgresql://bob:p@ss@db/x", "postgresql://bob:***@db/x"),
        ("postgresql://bob@db/x", "postgresql://bob@db/x"),
        ("runs/x/journal.log", "runs/x/journal.log"),
    ],
)
def test_passwords_in_urls_and_connection_strings_are_redacted(text: str, shown: str) -> None:
    assert redacted(text) == shown


MISTYPED = [
    f"postgresql:/autotune:{SECRET}@db.example/autotune",
    f"autotune:{SECRET}@db.example/autotune",
    f"host=db.example password={SECRET} dbname=autotune",
]


@pytest.mark.parametrize("url", MISTYPED)
def test_a_mistyped_storage_url_is_refused_before_anything_is_written(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("space.yaml").write_text("lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    args = ["search", "--model", "demo", "--space", "space.yaml", "--trials", "1", "--epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--storage", url, "--out", "out"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "is neither a storage URL nor a journal file path" in said and "***" in said
    assert "sqlite:///path, postgresql://user@host/db" in said
    assert SECRET not in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["space.yaml"]  # no folder, no journal


@pytest.mark.parametrize("url", MISTYPED)
def test_reading_a_study_from_a_mistyped_storage_url_writes_nothing(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["show", "out", "--storage", url])
    assert result.exit_code == 2, result.output
    assert "is neither a storage URL" in result.output and SECRET not in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_relative_journal_file_path_is_still_a_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    from autotune.search.storage import open_storage

    monkeypatch.chdir(tmp_path)
    storage = open_storage("runs/x/journal.log", tmp_path / "out")
    optuna.create_study(storage=storage, study_name="s")
    assert (tmp_path / "runs" / "x" / "journal.log").is_file()


@pytest.mark.parametrize("command", ["search", "show", "export"])
def test_an_unreachable_storage_is_reported_without_its_password(
    command: str, tmp_path: Path, tensors_file: Path
) -> None:
    url = f"postgresql://autotune:{SECRET}@127.0.0.1:1/autotune"
    out = str(tmp_path / "out")
    args = {
        "search": ["--model", "demo", "--data", "demo", "--trials", "1", "--out", out],
        "show": [out],
        "export": ["--out", out],
    }[command]
    result = CliRunner().invoke(app, [command, *args, "--storage", url])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert said.startswith("error: cannot open storage 'postgresql://autotune:***@127.0.0.1")
    assert "that the server is running" in said and SECRET not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_no_output_file_holds_the_password_a_host_name_or_an_unwritten_path(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("net.py").write_text(NET_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    from net import Net  # type: ignore[import-not-found]

    torch.save(Net().state_dict(), "net.pt")
    Path("data.pt").write_bytes(tensors_file.read_bytes())
    # SQLite takes no password; its URL's query may still carry one, as a server's would.
    url = f"sqlite:///out/study.db?password={SECRET}"
    args = ["search", "--model", "net.pt", "--arch", "net.py:Net", "--data", "data.pt"]
    args += ["--space", "default", "--trials", "2", "--epochs", "2", "--storage", url]
    args += ["--out", "out"]
    monkeypatch.setattr(sys, "argv", ["autotune", *args])  # the command line it records
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output

    files = [p for p in Path("out").rglob("*") if p.is_file()]
    assert {"study.db", "config.yaml", "model.pt2", "leaderboard.csv", "report.html"} <= {
        p.name for p in files
    }
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    assert "password=***" in Path("out/best/config.yaml").read_text()

    shared = [p for p in files if p.name in ("leaderboard.csv", "report.html")]
    shared += list(Path("out/best").iterdir())
    host = socket.gethostname().encode()
    for path in shared:
        content = path.read_bytes()
        assert str(tmp_path).encode() not in content, path
        assert b"site-packages" not in content, path
        if len(host) >= 6:  # a short name could occur by chance
            assert host not in content, path
