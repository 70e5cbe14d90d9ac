"""The model files of an exported bundle (``results/deploy.py``)."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TinyNet
from rich.console import Console

from autotune import search
from autotune.load.tasks import TaskData
from autotune.results.bundle_files import earlier_bundle, remove_stale
from autotune.results.deploy import save_model


def test_a_torchscript_model_exports_without_torchs_deprecation_warnings(
    tmp_path: Path, tiny_model: torch.nn.Module
) -> None:
    scripted = torch.jit.script(tiny_model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = save_model(scripted, torch.randn(2, 8), tmp_path)
    assert [str(w.message) for w in caught if w.category is FutureWarning] == []
    assert files["model.pt"].startswith("torch.jit.load")
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(torch.ones(2, 8)), scripted(torch.ones(2, 8)))


@pytest.mark.slow  # a fresh interpreter (pytest's own filters hide the warning): seconds
def test_autotune_export_of_a_torchscript_study_prints_no_warning(
    tmp_path: Path, tiny_model: torch.nn.Module, tensors_file: Path
) -> None:
    model = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(tiny_model), str(model))
    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 1.0e-3, high: 1.0e-2, log: true}\nfit: {max_epochs: 1}\n")
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "autotune.cli"]
    search = [*cli, "search", "--model", str(model), "--data", str(tensors_file), "--trials", "1"]
    done = subprocess.run(
        [*search, "--space", str(space), "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stderr, done.stderr
    exported = subprocess.run([*cli, "export", "--out", str(out)], capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "Warning" not in exported.stderr and "reproduced: True" in exported.stdout


def test_the_pickled_model_says_it_takes_normalised_images_where_the_program_takes_raw(
    tmp_path: Path,
) -> None:
    # With --export-preprocessing only model.pt2 normalises; model.pt is the model itself, and
    # its line said nothing, so raw [0, 1] images fed to it gave wrong answers silently.
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten()).eval()
    stats = {"normalize": {"mean": [0.5], "std": [0.25]}, "crop": 8, "channels": 1}
    files = save_model(model, torch.randn(2, 1, 8, 8), tmp_path, preprocessing=stats)
    assert "normalisation inside" in files["model.pt2"]
    assert files["model.pt"].endswith("; takes normalised images (data.preprocessing.normalize)")
    (tmp_path / "plain").mkdir()
    plain = save_model(model, torch.randn(2, 1, 8, 8), tmp_path / "plain")
    assert "normalised" not in plain["model.pt"]


class AttentionBlock(torch.nn.Module):
    """A block holding autotune's attention module, as a loaded torchvision ViT does."""

    def __init__(self) -> None:
        from autotune.load.attention import SelfAttention

        super().__init__()
        self.attention = SelfAttention(torch.nn.MultiheadAttention(8, 2, batch_first=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x)[0].mean(1)


def test_a_pickled_model_holding_autotunes_classes_says_it_needs_autotune(tmp_path: Path) -> None:
    # A torchvision ViT's attention is replaced by autotune.load.attention's module: model.pt
    # then unpickles only where autotune is installed, which its line did not say.
    files = save_model(AttentionBlock().eval(), torch.randn(2, 3, 8), tmp_path)
    assert files["model.pt"].endswith(", and autotune installed (autotune.load.attention)")
    (tmp_path / "plain").mkdir()
    plain = save_model(torch.nn.Linear(8, 2).eval(), torch.randn(2, 8), tmp_path / "plain")
    assert "autotune installed" not in plain["model.pt"]


class _ValueBranch(torch.nn.Module):
    """Control flow on the input's values: ``torch.export`` cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x)
        return out * 2 if x.sum() > 1e9 else out


def test_a_model_torch_export_fails_on_says_why_in_one_line_not_its_graph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = save_model(_ValueBranch().eval(), torch.rand(2, 4), tmp_path)
    assert files["model.pt2"].startswith("not written: torch.export failed (")
    said = capsys.readouterr()
    assert "def forward(" not in said.err + said.out  # the traced graph torch prints
    assert (tmp_path / "model.pt").is_file()


def test_only_files_an_earlier_bundle_lists_and_autotune_names_are_removed(tmp_path: Path) -> None:
    files = {"model.pt": "torch.load(...)", "model.pt2": "torch.export.load(...)"}
    for name in ("model.pt", "model.pt2", "model.onnx", "errors.png", "notes.txt"):
        (tmp_path / name).write_text(name)
    earlier = {"files": {**files, "model.onnx": "onnxruntime...", "notes.txt": "mine"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"autotune_version": "0.1.0", **earlier}))
    listed = earlier_bundle(tmp_path)
    assert listed[:4] == ["model.onnx", "model.pt", "model.pt2", "notes.txt"]
    remove_stale(tmp_path, listed, {"files": files})
    # model.onnx was the earlier export's; errors.png it did not list; notes.txt is no name of
    # autotune's, whatever a config.yaml says.
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["config.yaml", "errors.png", "model.pt", "model.pt2", "notes.txt"]
    # A config.yaml that autotune did not write, or none, lists nothing of autotune's.
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(earlier))
    assert earlier_bundle(tmp_path) == []
    (tmp_path / "config.yaml").write_text("- a list\n")
    assert earlier_bundle(tmp_path) == []
    (tmp_path / "config.yaml").unlink()
    assert earlier_bundle(tmp_path) == []


def test_the_dashboard_gets_the_exported_bundle_not_the_users_files_beside_it(
    tmp_path: Path, tiny_data: TaskData
) -> None:
    from optuna.artifacts import get_all_artifact_meta

    out = tmp_path / "run"
    quiet = {"out": out, "console": Console(file=io.StringIO()), "seed": 0}
    model = TinyNet()
    search(model, tiny_data, trials=2, **quiet)
    (out / "best" / "notes.txt").write_text("the user's own notes")
    result = search(model, tiny_data, trials=3, **quiet)  # continues: exports again
    names = {m.filename for m in get_all_artifact_meta(result.study)}
    exported = {n for n in names if n.startswith("exported-trial_")}
    assert any(n.endswith("-config.yaml") for n in exported)
    assert not any(n.endswith("notes.txt") for n in names)
