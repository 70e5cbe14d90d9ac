"""Several studies in one output folder: each keeps its own trials' weights, so each exports
what it found."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_cli_job
from typer.testing import CliRunner

from autotune.cli import app
from autotune.paths import checkpoints_dir, study_folder
from autotune.search.study import load_study

SPACE = "lr: 0.01\nfit: {max_epochs: 3, patience: 3}\n"


def _job(folder: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A model (state_dict + its class in net.py), data and a space in ``folder``, the cwd."""
    monkeypatch.chdir(folder)
    # The loss, not the accuracy: two models of a separable task often share an accuracy.
    return [*write_cli_job(folder, tensors_file, SPACE), "--metric", "loss", "--pruner", "none"]


def _search(args: list[str], name: str, seed: int) -> str:
    flags = ["--trials", "1", "--out", "out", "--study-name", name, "--seed", str(seed)]
    result = CliRunner().invoke(app, ["search", *args, *flags, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def _export(name: str) -> tuple[dict, str]:
    to = Path(f"exported-{name}")
    args = ["export", "--out", "out", "--study-name", name, "--to", str(to), "--code", "net.py"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return yaml.safe_load((to / "config.yaml").read_text()), result.output


def test_two_studies_in_one_out_each_export_their_own_weights(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _job(tmp_path, tensors_file, monkeypatch)
    assert "holds study" not in _search(args, "A", seed=0)
    said = _search(args, "B", seed=1)
    # B's bundle replaces A's in out/best: said before B starts, with how to write A's again.
    assert "note: out/best holds study 'A''s export; study 'B' will replace it" in said
    assert "`autotune export --out out --study-name A --to FOLDER` writes its bundle again" in said
    assert yaml.safe_load(Path("out/best/config.yaml").read_text())["study"] == "B"
    values = {name: load_study(None, tmp_path / "out", name).trials[1].values[0] for name in "AB"}
    assert values["A"] != values["B"]
    for name in "AB":
        config, output = _export(name)
        assert config["study"] == name and config["trial"] == 1
        assert config["weights"] == "weights saved by trial 1"
        assert config["metrics"]["reproduces_study_value"] is True, output
        assert "reproduced: True" in output
        assert config["metrics"]["val_loss"] == pytest.approx(values[name], abs=1e-9)
    a, b = (torch.load(f"exported-{n}/model.pt", weights_only=False) for n in "AB")
    assert not torch.equal(a.out.weight, b.out.weight)


def test_a_study_folder_name_is_safe_readable_and_distinct() -> None:
    assert study_folder("demo") == "demo"
    names = ["a/b", "a_b", "A_b", "..", "a b", "x" * 300, "a_b--0123abcd", "Ä", ""]
    folders = [study_folder(n) for n in names]
    assert len(set(folders)) == len(names)  # also on a case-insensitive disk:
    assert len({f.lower() for f in folders}) == len(names)
    for folder in folders:
        assert folder and len(folder) <= 80 and not folder.startswith(".")
        assert all((c.isalnum() and c.isascii()) or c in "._-" for c in folder), folder


def test_a_study_written_with_one_shared_checkpoints_folder_still_exports(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _job(tmp_path, tensors_file, monkeypatch)
    _search(args, "A", seed=0)
    # The layout before studies had folders of their own: the bare weights of every study's
    # trials in OUT/checkpoints/trial_NNNN.pt.
    mine = checkpoints_dir(Path("out"), "A")
    old = Path("out", "checkpoints", "trial_0001.pt")
    torch.save(torch.load(mine / old.name)["state_dict"], old)
    shutil.rmtree(mine)
    config, output = _export("A")
    assert config["weights"] == "weights saved by trial 1", output
    assert config["metrics"]["reproduces_study_value"] is True
    # Once another study shares the storage, those weights may be either's: A retrains, and
    # B's search leaves them alone.
    _search(args, "B", seed=1)
    assert old.is_file()
    config, output = _export("A")
    assert config["weights"] == "retrained from trial 1's parameters and seed", output
    assert config["metrics"]["reproduces_study_value"] is True


def test_a_damaged_checkpoint_is_retrained_and_said_so(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _job(tmp_path, tensors_file, monkeypatch)
    _search(args, "A", seed=0)
    saved = checkpoints_dir(Path("out"), "A") / "trial_0001.pt"
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])  # cut short, as a copy
    config, output = _export("A")
    said = " ".join(output.split())
    assert config["weights"].startswith("retrained from trial 1's parameters and seed (its "), said
    assert "is damaged or cut short" in config["weights"]
    assert "weights_only" not in said  # not torch's advice to unpickle it
    assert config["metrics"]["reproduces_study_value"] is True


def test_the_same_data_read_with_another_val_fraction_is_named_as_such(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _job(tmp_path, tensors_file, monkeypatch)
    # No validation split of its own: --val-fraction carves it from the training samples.
    torch.save({k: v for k, v in torch.load("data.pt").items() if "val" not in k}, "data.pt")
    flags = ["--trials", "1", "--out", "out", "--device", "cpu", "--val-fraction"]
    first = CliRunner().invoke(app, ["search", *args, *flags, "0.2"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, ["search", *args, *flags, "0.5"])
    assert again.exit_code == 2, again.output
    said = " ".join(again.output.split())
    assert "already holds a search with another data (the same 'data.pt', read with " in said
    assert "--val-fraction 0.2 -> 0.5)" in said
