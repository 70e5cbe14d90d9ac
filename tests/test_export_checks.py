"""``autotune export`` refuses what it cannot export faithfully in one line, before it loads
or rebuilds a model: data changed since the search, a destination it cannot write, a model
path recorded relative to another folder, a study with nothing trained to export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_cli_job
from typer.testing import CliRunner, Result

from autotune.cli import app

SPACE = "lr: 0.01\nfit: {max_epochs: 2, patience: 2}\n"
FAILING = "optimizer: sgd\nlr: 1.0e+30\nunfreeze: all\nfit: {max_epochs: 2, patience: 2}\n"


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


@pytest.fixture
def no_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the export gets as far as building its workspace (rankings, models)."""
    monkeypatch.setattr("autotune.results.export.Workspace.create", _refused)


def _refused(*args: object, **kwargs: object) -> None:
    pytest.fail("the export went on to rebuild the model")


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


NO_PROC = not Path("/proc/self").is_dir()


@pytest.mark.usefixtures("no_rebuild")
@pytest.mark.parametrize(
    ("to", "why"),
    [
        ("afile/sub", "(Not a directory)"),
        pytest.param(
            "/proc/autotune-test", "", marks=pytest.mark.skipif(NO_PROC, reason="Linux's /proc")
        ),
    ],
)
def test_export_to_a_folder_that_cannot_be_made_is_refused_up_front(
    to: str, why: str, tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _searched(tmp_path / "run", tensors_file, monkeypatch) == 0
    Path("afile").write_text("mine")
    result = _export("--to", to, "--retrain")
    assert result.exit_code == 2, result.output
    said = _said(result)
    assert f"--to '{to}' cannot be written {why}".strip() in said and "Traceback" not in said
    assert Path("afile").read_text() == "mine"


@pytest.mark.usefixtures("no_rebuild")
@pytest.mark.parametrize(
    ("in_the_way", "args", "refusal"),
    [
        (
            "afile",
            ["--out", "afile", "--storage", "out/study.journal"],
            "--out 'afile' is a file: pass the output folder of a search",
        ),
        (
            "out/trial_1",
            ["--out", "out", "--trial", "1"],
            "the export folder 'out/trial_1' is an existing file: pass --to FOLDER to export "
            "elsewhere",
        ),
    ],
)
def test_a_file_where_export_would_write_is_refused_up_front(
    in_the_way: str,
    args: list[str],
    refusal: str,
    tmp_path: Path,
    tensors_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _searched(tmp_path / "run", tensors_file, monkeypatch) == 0
    Path(in_the_way).write_text("in the way")
    result = CliRunner().invoke(app, ["export", *args, "--code", "net.py"])
    assert result.exit_code == 2, result.output
    said = _said(result)
    assert refusal in said and "Traceback" not in said, said
    assert Path(in_the_way).read_text() == "in the way"


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


def test_export_of_a_study_with_only_the_baseline_completed_exports_nothing(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _searched(tmp_path / "run", tensors_file, monkeypatch, FAILING) == 3
    with monkeypatch.context() as patched:
        patched.setattr("autotune.results.export.Workspace.create", _refused)
        result = _export()
    assert result.exit_code == 2, result.output
    said = _said(result)
    assert "no trial completed besides the baseline" in said, said
    assert "--trial 0" in said and not Path("out/best").exists()
    # What the message offers works: trial 0 is the source model, unchanged.
    source = _export("--trial", "0")
    assert source.exit_code == 0, source.output
    config = yaml.safe_load(Path("out/trial_0/config.yaml").read_text())
    assert config["weights"] == "the source model, unchanged"


def test_export_with_storage_and_an_out_that_does_not_exist_writes_the_bundle(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _searched(tmp_path / "run", tensors_file, monkeypatch) == 0
    args = ["export", "--out", "elsewhere", "--storage", "out/study.journal", "--code", "net.py"]
    result = CliRunner().invoke(app, [*args, "--to", "mine"])
    assert result.exit_code == 0, result.output
    assert Path("mine/config.yaml").is_file() and not Path("elsewhere").exists()


@pytest.mark.parametrize(
    ("state", "attrs", "said"),
    [
        ("FAIL", {"epochs": 2}, "--trial 1 failed"),
        ("PRUNED", {"epochs": 3}, "--trial 1 was stopped early"),
        # Skipped before its first epoch: "stopped early (not trained: ...)" contradicted itself.
        ("PRUNED", {"stop_reason": "not trained: a near copy of trial 1"},
         r"--trial 1 was never trained \(a near copy of trial 1\)"),
        ("PRUNED", {"stop_reason": "over budget: params 900 > 500"},
         r"--trial 1 was never trained \(over budget: params 900 > 500\)"),
    ],
)  # fmt: skip
def test_a_trial_without_a_model_is_named_in_words(
    state: str, attrs: dict[str, object], said: str
) -> None:
    import optuna
    from optuna.trial import TrialState

    from autotune.errors import AutotuneError
    from autotune.results.pick import pick_trial

    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"baseline": True}))
    study.add_trial(
        optuna.trial.create_trial(state=TrialState[state], value=None, user_attrs=attrs)
    )
    with pytest.raises(AutotuneError, match=f"^{said}: only completed trials have a model"):
        pick_trial(study, 1)
