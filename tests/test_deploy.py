"""The model files of an exported bundle (``results/deploy.py``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

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
