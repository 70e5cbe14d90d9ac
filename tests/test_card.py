"""``best/README.md``, the model card (``results/card.py``): its metrics are the config's, and its
load snippets run as written, from the bundle's folder, in a fresh interpreter."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TinyNet
from rich.console import Console

from autotune import search
from autotune.load.tasks import TaskData
from autotune.results.card import model_card

SPACE = {"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "fit": {"max_epochs": 1, "patience": 1}}
ONNX = all(importlib.util.find_spec(p) for p in ("onnx", "onnxruntime", "onnxscript"))
SNIPPET = re.compile(r"^`(?P<file>[\w.]+)`: .*?\n\n```python\n(?P<code>.*?)^```$", re.M | re.S)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from conftest import blobs

    from autotune.load.tasks import from_tensors

    x, y = blobs(300)
    data: TaskData = from_tensors(x[:240], y[:240], x_test=x[240:], y_test=y[240:])
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("card")
    result = search(
        TinyNet().eval(), data, space=SPACE, trials=2, out=out,
        console=Console(file=io.StringIO()), command="autotune search --model m.pt --trials 2",
        export=("onnx",) if ONNX else (),
    )  # fmt: skip
    assert result.best is not None
    config = yaml.safe_load((result.best.folder / "config.yaml").read_text())
    return result.best.folder, config


def test_the_card_reports_the_configs_metrics_beside_the_sources(bundle: tuple[Path, dict]) -> None:
    folder, config = bundle
    card = (folder / "README.md").read_text()
    assert card == model_card(config)  # built from config.yaml alone
    front = yaml.safe_load(card.split("---\n")[1])
    m = config["metrics"]
    scores = {r["name"]: r["value"] for r in front["model-index"][0]["results"][0]["metrics"]}
    assert scores == {
        "Validation accuracy": round(m["val_accuracy"], 4),
        "Held-out test accuracy": round(m["test_accuracy"], 4),
    }
    assert front["library_name"] == "pytorch" and front["pipeline_tag"] == "tabular-classification"
    row = f"| validation accuracy | {m['val_accuracy']:.4f} | {m['baseline_val_accuracy']:.4f} |"
    assert row in card
    assert f"| held-out test accuracy | {m['test_accuracy']:.4f} | " in card
    assert f"{m['test_fixed']} samples the source got wrong are now right" in card
    assert f"- parameters: {config['structure']['params']['model']:,}" in card
    assert "- samples: 192 train, 48 validation, 60 test" in card
    assert config["data"]["fingerprint"] in card and config["model"]["sha256"] in card
    assert "autotune search --model m.pt --trials 2" in card and config["reproduce"] in card
    for section in ("Model", "Data", "Results", "Size and speed", "How to use", "Reproduce"):
        assert f"\n## {section}\n" in card
    if ONNX:
        assert f"difference from the PyTorch output {config['onnx']['max_abs_diff']:.2g}" in card


def test_every_load_snippet_of_the_card_runs_in_the_bundles_folder(
    bundle: tuple[Path, dict],
) -> None:
    folder, config = bundle
    snippets = {m["file"]: m["code"] for m in SNIPPET.finditer((folder / "README.md").read_text())}
    written = {n for n, how in config["files"].items() if not how.startswith("not written")}
    assert set(snippets) == written and {"model.pt", "model.pt2"} <= written
    assert ("model.onnx" in written) == ONNX
    # The pickled model.pt needs its class importable, as the card says: TinyNet is in conftest.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    for name, code in snippets.items():
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, (name, done.stderr[-2000:])
        assert done.stdout.strip() in ("torch.Size([4, 3])", "(4, 3)"), (name, done.stdout)


def test_a_card_with_no_model_file_written_says_so_not_how_to_run_one(
    bundle: tuple[Path, dict],
) -> None:
    _, config = bundle
    files = {"model.pt": "not written: pickling failed (x)", "model.pt2": "not written: no (y)"}
    usage = model_card({**config, "files": files}).split("## How to use\n")[1].split("\n## ")[0]
    assert "Run from this folder" not in usage and "No model file could be written:" in usage
    assert "- `model.pt` not written: pickling failed (x)" in usage


def test_config_yaml_writes_every_value_out_with_no_anchors(bundle: tuple[Path, dict]) -> None:
    folder, config = bundle
    text = (folder / "config.yaml").read_text()
    # No feature names: the kept columns are the indices, one list met twice, which PyYAML
    # would write as an anchor (&id001) and a reference (*id001).
    assert "&id" not in text and "*id" not in text
    inputs = config["structure"]["inputs"]
    assert inputs["columns"] == inputs["indices"] == list(range(len(inputs["indices"])))


def test_the_card_names_the_folder_an_arch_files_class_imports_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--arch models/wine_net.py:Net`` pickles the class under the bare module ``wine_net``:
    the card said only "needs the classes it was built from importable", and its snippet,
    run from the bundle's folder as it says, failed with No module named 'wine_net'."""
    from conftest import NET_SOURCE, blobs

    from autotune.load.job import ModelSpec
    from autotune.load.tasks import from_tensors

    monkeypatch.chdir(tmp_path)
    Path("models").mkdir()
    Path("models/wine_net.py").write_text(NET_SOURCE)
    torch.manual_seed(0)
    body, out = torch.nn.Linear(8, 16), torch.nn.Linear(16, 3)
    state = {f"body.0.{k}": v for k, v in body.state_dict().items()}
    torch.save(state | {f"out.{k}": v for k, v in out.state_dict().items()}, "net.pt")
    x, y = blobs(200)
    result = search(
        ModelSpec("net.pt", arch="models/wine_net.py:Net"), from_tensors(x, y), space=SPACE,
        trials=1, out="run", console=Console(file=io.StringIO()),
    )  # fmt: skip
    assert result.best is not None
    card = (result.best.folder / "README.md").read_text()
    # Relative to the bundle's folder: a bundle is shared, and no absolute path goes with it.
    assert "module wine_net from ../../models: run with PYTHONPATH=../../models" in card
    assert str(tmp_path.resolve()) not in card
    folder = "../../models"
    code = SNIPPET.search(card)
    assert code is not None and code["file"] == "model.pt"
    # As the card says: from the bundle's folder, with that PYTHONPATH (and no other).
    env = {**os.environ, "PYTHONPATH": folder}
    done = subprocess.run(
        [sys.executable, "-c", code["code"]], cwd=result.best.folder, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
