from __future__ import annotations

import copy

import pytest
import torch

from autotune.config import TrialConfig
from autotune.errors import TrialFailed
from autotune.load.tasks import TaskData
from autotune.trial.fit import evaluate, fine_tune


def test_fine_tuning_improves_and_keeps_the_best_weights(
    tiny_model: torch.nn.Module, tiny_data: TaskData
) -> None:
    before = evaluate(tiny_model, tiny_data.x_val, tiny_data.y_val).accuracy
    result = fine_tune(tiny_model, tiny_data, TrialConfig(lr=1e-2), max_epochs=10, patience=10)
    after = evaluate(tiny_model, tiny_data.x_val, tiny_data.y_val).accuracy
    assert after > before + 0.3
    assert after == result.best == max(h["val_accuracy"] for h in result.history)
    assert not tiny_model.training


def test_early_stopping_after_patience_epochs(
    tiny_model: torch.nn.Module, tiny_data: TaskData
) -> None:
    # With a zero learning rate only BatchNorm's running statistics move: the accuracy does
    # not beat the first epoch's, and three epochs later the fit stops.
    result = fine_tune(tiny_model, tiny_data, TrialConfig(lr=0.0), max_epochs=20, patience=3)
    assert (result.epochs_run, result.stop_reason) == (4, "patience")
    accuracies = [h["val_accuracy"] for h in result.history]
    assert accuracies[0] == max(accuracies)


def test_nan_loss_fails_the_trial_with_its_reason(
    tiny_model: torch.nn.Module, tiny_data: TaskData
) -> None:
    with pytest.raises(
        TrialFailed, match="training loss became nan in epoch 1; lower the learning rate"
    ):
        fine_tune(
            tiny_model, tiny_data, TrialConfig(lr=1e30, optimizer="sgd"), max_epochs=3, patience=3
        )


def test_same_seed_same_result(tiny_model: torch.nn.Module, tiny_data: TaskData) -> None:
    config = TrialConfig(lr=3e-3, dropout=None, batch_size=16)
    a, b = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    ra = fine_tune(a, tiny_data, config, max_epochs=4, patience=4, seed=7)
    rb = fine_tune(b, tiny_data, config, max_epochs=4, patience=4, seed=7)
    assert ra.history == rb.history
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_frozen_batchnorm_keeps_its_running_statistics(
    tiny_model: torch.nn.Module, tiny_data: TaskData
) -> None:
    from autotune.trial.freeze import unfreeze

    unfreeze(tiny_model, 1)  # only the classifier trains
    bn = tiny_model.body[1]
    mean = bn.running_mean.clone()
    fine_tune(tiny_model, tiny_data, TrialConfig(lr=1e-2), max_epochs=2, patience=2)
    assert torch.equal(bn.running_mean, mean)


def test_loss_metric_is_minimised(tiny_model: torch.nn.Module, tiny_data: TaskData) -> None:
    result = fine_tune(
        tiny_model, tiny_data, TrialConfig(lr=1e-2), max_epochs=6, patience=6, metric="loss"
    )
    assert result.best == min(h["val_loss"] for h in result.history)


def test_the_best_epochs_weights_come_back_after_a_worse_last_epoch() -> None:
    # Training labels are noise, so a large learning rate drifts the validation loss around:
    # the best epoch is not the last, and the model must end with the best epoch's weights.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(120, 8, generator=gen)
    y = (x[:, 0] > 0).long()
    noise = torch.randint(0, 2, (80,), generator=gen)
    data = TaskData(x[:80], noise, x[80:], y[80:])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    result = fine_tune(model, data, TrialConfig(lr=0.05), max_epochs=12, patience=12, metric="loss")
    assert result.best_epoch < result.epochs_run
    assert result.history[-1]["val_loss"] > result.best
    assert evaluate(model, data.x_val, data.y_val).loss == pytest.approx(result.best, abs=1e-6)


def test_an_epoch_with_the_same_accuracy_and_a_lower_loss_wins(
    tiny_model: torch.nn.Module, tiny_data: TaskData
) -> None:
    # The blobs are separable: validation accuracy reaches 1.0 within a few epochs and stays,
    # while the loss keeps falling; the weights kept are the last such epoch's, not the first.
    result = fine_tune(tiny_model, tiny_data, TrialConfig(lr=1e-2), max_epochs=8, patience=8)
    perfect = [h for h in result.history if h["val_accuracy"] == 1.0]
    assert len(perfect) >= 2, result.history
    lowest = min(perfect, key=lambda h: h["val_loss"])
    assert result.history[result.best_epoch - 1] is lowest
    kept = evaluate(tiny_model, tiny_data.x_val, tiny_data.y_val)
    assert kept.loss == pytest.approx(lowest["val_loss"], abs=1e-6)


def test_averaged_weights_are_what_is_scored_and_kept(
    tiny_model: torch.nn.Module, tiny_data: TaskData
) -> None:
    plain = copy.deepcopy(tiny_model)
    fine_tune(plain, tiny_data, TrialConfig(lr=1e-2), max_epochs=6, patience=6)
    result = fine_tune(
        tiny_model, tiny_data, TrialConfig(lr=1e-2, average="ema"), max_epochs=6, patience=6
    )
    # The same seed and steps, but the kept weights are the average, not the trained ones.
    assert any(
        not torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), tiny_model.state_dict().values(), strict=True)
    )
    # The model that comes back scores what the fit recorded for its best epoch.
    scores = evaluate(tiny_model, tiny_data.x_val, tiny_data.y_val)
    best = result.history[result.best_epoch - 1]
    assert scores.accuracy == result.best == best["val_accuracy"]
    assert scores.loss == pytest.approx(best["val_loss"], rel=1e-5)
    assert result.best > 0.8  # and it learned the task


def test_an_unknown_average_is_refused_by_the_space() -> None:
    from autotune.errors import SpaceError
    from autotune.search.space import load_space

    assert load_space({"average": "ema"}).values_of("average") == ("ema",)
    with pytest.raises(SpaceError, match="'swa' is not one of"):
        load_space({"average": ["none", "swa"]})


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_optimizer_is_fused_on_the_cpu_with_the_loops_arithmetic(
    optimizer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autotune.trial import fit

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    looped = copy.deepcopy(model)
    config = TrialConfig(optimizer=optimizer, lr=1e-2, weight_decay=0.05)
    fused = fit.make_optimizer(model, config)
    monkeypatch.setattr(fit, "fusable", lambda params: False)
    reference = fit.make_optimizer(looped, config)
    assert fused.defaults["fused"] and not reference.defaults["fused"]
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    for _ in range(10):
        for net, opt in ((model, fused), (looped, reference)):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for a, b in zip(model.parameters(), looped.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_parameters_without_fused_kernels_get_the_loop() -> None:
    from autotune.trial import fit

    model = torch.nn.Linear(4, 2, device="meta")
    assert not fit.fusable(list(model.parameters()))
    assert fit.fusable(list(torch.nn.Linear(4, 2).parameters()))
    integer = torch.nn.Parameter(torch.ones(3, dtype=torch.int64), requires_grad=False)
    assert not fit.fusable([integer])
