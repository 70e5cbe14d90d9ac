"""The rankings of a study run by several machines: computed by the first, stored in the study,
read by the others into their own cache instead of computed again."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from conftest import TinyNet, blobs

from autotune.load.job import Job
from autotune.load.tasks import from_tensors
from autotune.search.prepare import run_analyses
from autotune.search.shared import fetch, shared
from autotune.search.space import load_space


def test_a_second_machine_reads_the_rankings_from_the_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    x, y = blobs(120)
    job = Job.from_objects(
        TinyNet().eval(), from_tensors(x[:80], y[:80], x_val=x[80:], y_val=y[80:])
    )
    space = load_space(
        {
            "prune": {"low": 0.0, "high": 0.5},
            "analysis": {"samples": 16, "background": 4, "nsamples": 2},
        }
    )
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    said: list[str] = []
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / "first"))
    first: dict = {}
    shared(study, job, space, lambda: run_analyses(job, space, first, None, said.append), 0.0)
    assert "cached" not in said[0]  # computed here
    # Another machine: its own empty cache, the same study.
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / "second"))
    assert fetch(study, job, space) == len(space.methods()) == 1
    second: dict = {}
    run_analyses(job, space, second, None, said.append)
    assert "(cached)" in said[-1]
    assert second["shap"].channels.keys() == first["shap"].channels.keys()
    for layer, scores in first["shap"].channels.items():
        assert list(second["shap"].channels[layer]) == list(scores)
    assert "autotune:analysis:" not in str(study.user_attrs)  # kept off the dashboard's list
