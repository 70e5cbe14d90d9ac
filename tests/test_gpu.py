"""The CUDA path, run by ``bench/gpu_check.sh`` on a machine with a GPU; skipped elsewhere
(their CPU halves are in test_accel.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from conftest import TinyNet
from rich.console import Console

from autotune import search
from autotune.rank.methods import score

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_a_cuda_search_trains_in_mixed_precision_and_releases_memory(tmp_path: Path) -> None:
    result = search(
        "demo", "demo", trials=6, out=tmp_path, device="cuda", console=Console(file=io.StringIO())
    )
    trained = [t for t in result.study.trials if "precision" in t.user_attrs]
    assert trained
    expected = "bf16 autocast" if torch.cuda.is_bf16_supported() else "fp16 autocast + scaler"
    assert all(t.user_attrs["precision"].startswith(expected) for t in trained)
    assert all("channels-last" in t.user_attrs["precision"] for t in trained)  # a conv net
    memory = [t.user_attrs["cuda_memory_mb"] for t in trained]
    assert max(memory) <= memory[0] * 1.05 + 1  # nothing left behind from trial to trial
    assert result.best is not None


def test_the_analysis_on_the_gpu_ranks_like_the_cpu() -> None:
    torch.manual_seed(0)
    model = TinyNet().eval()
    x, y = torch.randn(64, 8), torch.arange(64) % 3
    cpu = score("shap", model, x, y, seed=1)
    gpu = score("shap", model, x, y, seed=1, device="cuda")
    assert cpu.channels.keys() == gpu.channels.keys()
    for layer, values in cpu.channels.items():
        assert values == pytest.approx(gpu.channels[layer], rel=1e-3, abs=1e-6)


def test_a_model_on_the_gpu_is_traced_with_a_cpu_example() -> None:
    # The search keeps the source on its device while examples stay on the CPU: the gate
    # sites (and so what can be pruned) must not depend on where the model is.
    from autotune.load.demo import DigitsCNN
    from autotune.rank.gates import sites

    model = DigitsCNN().eval()
    example = torch.randn(2, 1, 8, 8)
    on_cpu = [(s.layer, s.prunable) for s in sites(model, example)]
    assert on_cpu == [(s.layer, s.prunable) for s in sites(model.cuda(), example)]
    assert any(prunable for _, prunable in on_cpu)
