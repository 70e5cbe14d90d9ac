"""What a search leaves behind when something goes wrong: the output folder is checked first,
every file that can be written is (atomically), and the exit code says what happened."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from conftest import NET_SOURCE, TinyNet
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

from autotune import search
from autotune.cli import app
from autotune.errors import AutotuneError
from autotune.load.tasks import TaskData

SPACE = {"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "fit": {"max_epochs": 2, "patience": 2}}
NET = (
    NET_SOURCE
    + """

class Broken(Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("this layer cannot train")
        return super().forward(x)
"""
)


def _files(folder: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A model (state_dict + its class in net.py) and data in ``folder``, the cwd: the options."""
    monkeypatch.chdir(folder)
    Path("net.py").write_text(NET)
    torch.save(_net_state(), "net.pt")
    Path("data.pt").write_bytes(tensors_file.read_bytes())
    return ["--model", "net.pt", "--data", "data.pt", "--space", "default", "--epochs", "2"]


def _net_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    body, out = nn.Linear(8, 16), nn.Linear(16, 3)
    return {
        **{f"body.0.{k}": v for k, v in body.state_dict().items()},
        **{f"out.{k}": v for k, v in out.state_dict().items()},
    }


def _search(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["search", *args])
    return result.exit_code, result.output


def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    for out, says in ((taken, "is an existing file"), (taken / "sub", "cannot be written")):
        code, output = _search("--model", "demo", "--out", str(out))
        assert code == 2, output
        assert says in output and len(output.strip().splitlines()) == 1
    assert taken.read_text() == "not a folder"


@pytest.mark.parametrize("keep_old", [True, False])
def test_a_write_into_a_file_instead_of_a_folder_raises_its_own_error_alone(
    tmp_path: Path, keep_old: bool
) -> None:
    from autotune.paths import write_text_atomically

    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    with pytest.raises(NotADirectoryError) as raised:
        write_text_atomically(taken / "report.html", "page", keep_old=keep_old)
    # The open's error, not one of the cleanup's raised while handling it (a double traceback).
    assert raised.value.__context__ is None
    assert ".report.html." in str(raised.value.filename)
    assert taken.read_text() == "not a folder"


class WithLambda(nn.Module):
    """A model pickle cannot save: it holds a lambda."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet()
        self.act = lambda x: x * 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.net(x))


def test_a_model_that_cannot_be_pickled_still_gets_its_config_and_program(
    tmp_path: Path, tiny_data: TaskData
) -> None:
    torch.manual_seed(0)
    result = search(
        WithLambda().eval(),
        tiny_data,
        space=SPACE,
        trials=1,
        out=tmp_path,
        console=Console(file=io.StringIO()),
    )
    assert result.best is not None
    best = tmp_path / "best"
    files = result.best.config["files"]
    assert files["model.pt"].startswith("not written: pickling failed")
    assert sorted(p.name for p in best.iterdir()) == ["README.md", "config.yaml", "model.pt2"]
    program = torch.export.load(best / "model.pt2").module()
    assert program(tiny_data.x_val[:5]).shape == (5, 3)
    assert (tmp_path / "leaderboard.csv").is_file() and (tmp_path / "report.html").is_file()


FAILING = {"now": False}


class FailsLater(TinyNet):
    """Works until told to fail, as a model may after some forward calls."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if FAILING["now"]:
            raise RuntimeError("CUDA error: an illegal memory access was encountered\n(details)")
        return super().forward(x)


def test_exporting_a_model_that_fails_on_its_second_evaluation_is_one_clear_error(
    tmp_path: Path, tiny_data: TaskData
) -> None:
    torch.manual_seed(0)
    quiet = Console(file=io.StringIO())
    result = search(
        FailsLater().eval(), tiny_data, space=SPACE, trials=1, out=tmp_path, console=quiet
    )
    FAILING["now"] = True
    try:
        with pytest.raises(AutotuneError, match="failed when rebuilt and evaluated") as info:
            result.export(tmp_path / "again", trial=1)
    finally:
        FAILING["now"] = False
    assert "\n" not in str(info.value) and "illegal memory access" in str(info.value)


@pytest.mark.slow
def test_ctrl_c_mid_trial_still_writes_the_leaderboard_best_and_report(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autotune.results.live import LiveLeaderboard

    def interrupt(self: LiveLeaderboard, number: int, doing: str) -> None:
        if number >= 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(LiveLeaderboard, "progress", interrupt)
    args = _files(tmp_path, tensors_file, monkeypatch)
    code, output = _search(*args, "--arch", "net.py:Net", "--trials", "5", "--out", "out")
    assert code == 130, output
    assert "interrupted" in output and "Traceback" not in output
    out = Path("out")
    board = (out / "leaderboard.csv").read_text()
    assert board.count("COMPLETE") == 2 and "BASELINE" in board  # trials 1 and 2
    assert (out / "best" / "config.yaml").is_file() and (out / "report.html").is_file()
    assert not list(out.rglob(".*.part*"))


@pytest.mark.slow
def test_a_study_stopped_by_failures_exits_3_and_exports_no_untouched_baseline(
    tmp_path: Path, tensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _files(tmp_path, tensors_file, monkeypatch)
    code, output = _search(*args, "--arch", "net.py:Broken", "--trials", "8", "--out", "out")
    assert code == 3, output
    assert "5 trials in a row failed" in output and "this layer cannot train" in output
    assert "nothing exported: no trial completed besides the baseline" in output
    out = Path("out")
    assert (out / "leaderboard.csv").read_text().count("FAIL") == 5
    assert (out / "report.html").is_file() and not (out / "best").exists()


def test_a_budget_above_one_with_a_decimal_point_is_refused_with_both_readings() -> None:
    from autotune.config import SearchSettings

    # Not "or 200%": a share of the whole source or more is refused (it limits nothing).
    with pytest.raises(AutotuneError, match=r"write 2 \(parameters\) or a share below 1"):
        SearchSettings(max_params="2.0").resolved({})
    with pytest.raises(AutotuneError, match="write a whole count or a share below 1"):
        SearchSettings(max_macs=1.5).resolved({})
    for fine in ("0.5", "50%", "2", "250k", "1.5M", "1e6"):
        assert SearchSettings(max_params=fine).resolved({}).max_params == fine


def test_a_mistyped_setting_of_the_python_api_names_the_one_meant(
    tiny_model: nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    # The CLI's --epochs is max_epochs in Python; refused before any folder is made.
    with pytest.raises(TypeError, match=r"^epochs= is not a search setting: did you mean max_e"):
        search(tiny_model, tiny_data, trials=1, out=tmp_path / "run", epochs=2)
    with pytest.raises(TypeError, match=r"^colour= is not a search setting: the settings are tr"):
        search(tiny_model, tiny_data, trials=1, out=tmp_path / "run", colour="red")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("option", "value"), [("--epochs", "0"), ("--patience", "-1")])
def test_an_epoch_count_below_one_is_refused_by_its_option_name(option: str, value: str) -> None:
    # It said "epochs and patience must be >= 1, got 0, 5": neither flag, nor which was wrong.
    result = CliRunner().invoke(app, ["search", "--model", "demo", option, value])
    assert result.exit_code == 2, result.output
    assert f"error: {option} must be at least 1, got {value}" in result.output, result.output


def test_a_search_from_python_into_a_log_keeps_each_line_whole(
    tmp_path: Path,
    tiny_data: TaskData,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A script's output in a log (python train.py > log), as the CLI's: no console passed.
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / ("a-long-folder-name-" * 4)
    torch.manual_seed(0)
    search(TinyNet().eval(), tiny_data, space=SPACE, trials=1, out=out)
    lines = capsys.readouterr().out.splitlines()
    opening = next(line for line in lines if line.startswith("model "))
    assert len(opening) > 80 and opening.endswith(f"in {out / 'study.journal'}"), lines


def test_printing_a_search_result_in_a_script_shows_its_leaderboard_and_export(
    tmp_path: Path, tiny_data: TaskData
) -> None:
    torch.manual_seed(0)
    quiet = Console(file=io.StringIO())
    result = search(TinyNet().eval(), tiny_data, space=SPACE, trials=2, out=tmp_path, console=quiet)
    assert result.best is not None
    shown = str(result)  # what print(result) writes
    assert shown.startswith(str(result.leaderboard)) and "TrialRow(" not in shown
    assert shown.endswith(f"exported to {result.best.folder}")
    assert len(repr(result)) < 300 and repr(result.leaderboard) in repr(result)
