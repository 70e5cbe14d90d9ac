from __future__ import annotations

import torch
from torch import nn

from autotune.trial.cost import MIN_REPEATS, measure


def _recording(model: nn.Module, name: str, calls: list[str]) -> nn.Module:
    model.register_forward_hook(lambda *_: calls.append(name))
    return model


def test_latency_is_timed_alternately_with_the_source_and_reported_as_a_ratio() -> None:
    calls: list[str] = []
    source = _recording(nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3)), "src", calls)
    slim = _recording(nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3)), "new", calls)
    slim.train()
    source.eval()
    cost = measure(slim, torch.randn(20, 5), source=(source, torch.randn(20, 8)))
    assert calls[0] == "new"  # counting the MACs
    timed = calls[1:]
    # Two warm-up rounds, then the same number of runs of each, never two of one in a row
    # without the other in between (the order flips every round).
    assert timed.count("src") == timed.count("new") >= MIN_REPEATS + 2
    rounds = [tuple(timed[i : i + 2]) for i in range(0, len(timed), 2)]
    assert set(rounds) == {("new", "src"), ("src", "new")}
    assert cost.latency_ratio is not None and cost.latency_ratio > 0
    assert cost.ratio_spread is not None and cost.ratio_spread >= 0
    assert cost.params == sum(p.numel() for p in slim.parameters())
    assert slim.training and not source.training  # each is left in the mode it came in


def test_without_the_source_there_is_no_ratio() -> None:
    cost = measure(nn.Linear(4, 2), torch.randn(3, 4))
    assert cost.latency_ms > 0 and cost.latency_ratio is None and cost.macs
