from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from autotune.cli import app
from autotune.load.demo import build_demo, demo_files
from autotune.load.models import load_model
from autotune.trial.fit import evaluate


def test_demo_is_deterministic_and_the_shift_hurts() -> None:
    state_a, data_a = build_demo()
    state_b, _ = build_demo()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    model = load_model("demo").module
    shifted = evaluate(model, data_a["x_val"], data_a["y_val"]).accuracy
    assert shifted < 0.5  # the pretrained model does badly on the target domain


@pytest.mark.slow
def test_readme_demo_gives_a_large_real_gain(tmp_path: Path) -> None:
    """The README's first command, end to end: 20 trials on 2 cores."""
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "best" / "config.yaml").read_text())
    metrics = config["metrics"]
    assert metrics["baseline_val_accuracy"] < 0.5
    assert metrics["gain"] > 0.4
    assert metrics["test_accuracy"] > 0.8
    program = torch.export.load(tmp_path / "best" / "model.pt2").module()
    data = torch.load(demo_files().data)
    with torch.no_grad():
        accuracy = (program(data["x_val"]).argmax(1) == data["y_val"]).double().mean().item()
    assert accuracy == pytest.approx(metrics["val_accuracy"], abs=1e-9)


def test_a_demo_cache_folder_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    cache = tmp_path / "file" / "cache"  # AUTOTUNE_CACHE_DIR under a file
    args = ["search", "--model", "demo", "--trials", "1", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args, env={"AUTOTUNE_CACHE_DIR": str(cache)})
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith(
        f"error: the demo's cache folder '{cache}/demo-"
    )  # before the demo is built: it was a NotADirectoryError traceback
    assert "cannot be written (Not a directory): set AUTOTUNE_CACHE_DIR" in result.output
