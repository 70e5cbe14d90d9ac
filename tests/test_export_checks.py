"""``autotune export`` refuses what it cannot export faithfully in one line, before it loads
or rebuilds a model: data changed since the search, a destination it cannot write, a model
path recorded relative to another folder, a study with nothing trained to export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_cli_job
from typer.testing import CliRunner, Result

from autotune.cli import app

SPACE = "lr: 0.01\nfit: {max_epochs: 2, patience: 2}\n"


def _searched(
    folder: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch, space: str = SPACE
) -> int:
    """A one-trial search in ``folder`` (the cwd), on files named relative to it."""
    folder.mkdir()
    monkeypatch.chdir(folder)
    args = [*write_cli_job(folder, tensors_file, space), "--pruner", "none", "--device", "cpu"]
    result = CliRunner().invoke(app, ["search", *args, "--trials", "1", "--out", "out"])
    return result.exit_code


def _export(*args: str) -> Result:
    return CliRunner().invoke(app, ["export", "--out", "out", "--code", "net.py", *args])


def _said(result: Result) -> str:
    return " ".join(result.output.split())


@pytest.mark.usefixtures("no_rebuild")
@pytest.mark.parametrize("retrain", [False, True])
def test_export_refuses_data_that_changed_since_the_search(
    retrain: bool, tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _searched(tmp_path / "run", tensors_file, monkeypatch) == 0
    data = torch.load("data.pt")
    data["y_val"] = torch.zeros_like(data["y_val"])
    torch.save(data, "data.pt")
    result = _export("--to", "again", *(["--retrain"] if retrain else []))
    assert result.exit_code == 2, result.output
    said = _said(result)
    assert "data 'data.pt' changed since the search" in said, said
    assert "pass the data the search used" in said and "Traceback" not in said
    assert not Path("again").exists()


def test_export_of_unchanged_data_still_reproduces(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _searched(tmp_path / "run", tensors_file, monkeypatch) == 0
    result = _export("--to", "again")
    assert result.exit_code == 0, result.output
    assert "reproduced: True" in result.output


@pytest.mark.usefixtures("no_rebuild")
def test_export_from_another_folder_says_the_model_path_is_the_searchs(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    assert _searched(run, tensors_file, monkeypatch) == 0
    monkeypatch.chdir(tmp_path)
    args = ["export", "--out", str(run / "out"), "--code", str(run / "net.py"), "--to", "x"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    said = _said(result)
    assert "model file 'net.pt', as the search recorded it (relative to the folder" in said, said
    assert "run autotune export from the folder the search ran in" in said
    assert "pass the path of a model file" not in said and not Path("x").exists()
