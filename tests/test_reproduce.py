"""``config.yaml``'s ``reproduce`` (``results/reproduce.py``): the export command runs as written
from the folder the search ran in, naming the storage and the code that export needs."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_cli_job
from typer.testing import CliRunner

from autotune.cli import app
from autotune.results.card import _reproduce
from autotune.results.reproduce import reproduce_command

SPACE = "lr: {low: 1.0e-3, high: 1.0e-2, log: true}\nfit: {max_epochs: 1, patience: 1}\n"


def test_the_recorded_export_command_runs_as_written(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    job = write_cli_job(tmp_path, tensors_file, SPACE)
    where = ["--storage", "my.journal", "--out", "runs/net", "--device", "cpu"]
    searched = CliRunner().invoke(app, ["search", *job, "--trials", "1", *where])
    assert searched.exit_code == 0, searched.output
    command = yaml.safe_load(Path("runs/net/best/config.yaml").read_text())["reproduce"]
    argv = shlex.split(command)
    assert argv[:2] == ["autotune", "export"] and "--code" in argv, command
    again = CliRunner().invoke(app, argv[1:])
    assert again.exit_code == 0, (command, again.output)


def record(model: dict[str, Any], spec: str = "data.pt") -> dict[str, Any]:
    return {"model": {"path": "m.pt", **model}, "data": {"spec": spec}}


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ({"arch": "torchvision:resnet18"}, ""),
        ({"arch": "models/net.py:Net"}, " --code models/net.py"),
        ({"code": "net.py", "trust_model": True}, " --trust-model"),
        ({"arch": "mypackage.nets:Net"}, " --trust-model"),
    ],
)
def test_export_is_given_the_trust_the_search_had(model: dict[str, Any], options: str) -> None:
    command = reproduce_command("runs/x", None, "m", 3, record(model))
    assert command == f"autotune export --out runs/x --study-name m --trial 3{options}"


def test_a_storage_is_named_without_its_password() -> None:
    url = "postgresql://me:secret@db/studies"
    command = reproduce_command("runs/x", url, "m", 3, record({}))
    assert "--storage 'postgresql://me:***@db/studies'" in command and "secret" not in command


def test_objects_passed_in_memory_are_exported_again_from_python() -> None:
    command = reproduce_command("runs/x", None, "m", 3, record({}, spec="<in memory>"))
    assert command.startswith("result.export('runs/x/trial_3', trial=3)")
    config = {"reproduce": command, "search_command": None}
    assert f"## Reproduce\n\n```python\n{command}\n```\n" in _reproduce(config)
