"""Searches that slim the model: pruning, feature dropping, budgets, the Pareto front."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import yaml
from optuna.trial import TrialState
from rich.console import Console
from torch import nn

from autotune import search
from autotune.load.tasks import TaskData, from_tensors
from autotune.paths import checkpoints_dir
from autotune.search.selection import exported_trial
from autotune.search.study import LIMITS, feasible

ANALYSIS = {"samples": 32, "background": 8, "nsamples": 4}


def _wide_data(seed: int = 0) -> TaskData:
    """Three classes told apart by 4 features, plus 4 columns of noise."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(300) % 3
    centers = torch.randn(3, 4, generator=gen) * 3
    x = torch.cat(
        [centers[y] + torch.randn(300, 4, generator=gen), torch.randn(300, 4, generator=gen)], 1
    )
    data = from_tensors(x[:200], y[:200], x_val=x[200:260], y_val=y[200:260])
    data.feature_names = [f"real{i}" for i in range(4)] + [f"noise{i}" for i in range(4)]
    return data


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)
    ).eval()


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_budgeted_search_prunes_drops_features_and_documents_the_inputs(tmp_path: Path) -> None:
    data = _wide_data()
    model = _mlp()
    original = sum(p.numel() for p in model.parameters())
    space = {
        "lr": 1e-2,
        "prune": {"low": 0.0, "high": 0.8},
        "drop_features": {"low": 0.0, "high": 0.5},
        "unfreeze_order": ["output", "shap"],
        "fit": {"max_epochs": 4, "patience": 4},
        "analysis": ANALYSIS,
    }
    console = _quiet()
    result = search(
        model, data, space=space, trials=8, out=tmp_path, console=console, max_params="0.6"
    )
    trials = result.study.trials
    limit = int(0.6 * original)
    # Stage 1 (trials 1-4) tunes the full model, over this budget, so never exported; the
    # standard recipe comes first. Stage 2 slims the best of them, with its hyperparameters.
    assert [t.user_attrs["stage"] for t in trials[1:]] == [1] * 4 + [2] * 4
    assert trials[1].params["unfreeze_order"] == "output"
    parent = trials[5].user_attrs["parent"]
    tuned = [t for t in trials[1:5] if t.state == TrialState.COMPLETE]
    # The parent is the best on accuracy; ties go to the lower validation loss.
    assert parent == max(tuned, key=lambda t: (t.values[0], -t.user_attrs["val_loss"])).number
    limits = result.study.user_attrs[LIMITS]
    for t in trials[1:5]:
        # Over the budget, never exported; but no constraint for the sampler, which would rank
        # every full-size trial alike (test_a_size_budget_leaves_stage_one_sampling_as_without_it).
        assert t.user_attrs["total_params"] == original and not feasible(t, limits)
        assert "params" not in t.constraints
        assert "prune" not in t.params
    for t in trials[5:]:
        assert t.user_attrs["parent"] == parent and "prune" in t.params
        over = t.user_attrs["total_params"] > limit
        assert (t.constraints["params"] > 0) == over
        if over:  # never trained: pruned with the reason
            assert t.state == TrialState.PRUNED and "over budget" in t.user_attrs["stop_reason"]
    assert trials[0].user_attrs["baseline"] and trials[0].constraints["params"] > 0
    best = result.best
    assert best is not None and best.config["structure"]["params"]["model"] <= limit
    assert best.config["structure"]["params"]["source"] == original
    inputs = best.config["structure"]["inputs"]
    kept = inputs["indices"]
    assert inputs["columns"] == [data.feature_names[i] for i in kept]  # type: ignore[index]
    assert len(kept) + len(inputs["dropped"]) == 8
    # The exported program takes the data's rows as they are (it selects the kept columns
    # inside) and reproduces the metric; the pickled model takes the documented columns.
    program = torch.export.load(best.folder / "model.pt2").module()
    module = torch.load(best.folder / "model.pt", weights_only=False)
    with torch.no_grad():
        predicted = program(data.x_val).argmax(1)
        assert torch.equal(module(data.x_val[:, kept]).argmax(1), predicted)
    accuracy = (predicted == data.y_val).float().mean().item()
    assert accuracy == pytest.approx(best.config["metrics"]["val_accuracy"])
    assert "selects its" in best.config["files"]["model.pt2"]
    saved = yaml.safe_load((best.folder / "config.yaml").read_text())
    assert saved["structure"]["inputs"]["columns"] == inputs["columns"]
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "shap analysis: 2 prunable layers" in text
    assert (tmp_path / "analysis" / "shap.json").is_file()


def test_pareto_search_marks_the_front_and_exports_its_most_accurate(tmp_path: Path) -> None:
    space = {
        "lr": 1e-2,
        "prune": {"low": 0.0, "high": 0.8},
        "fit": {"max_epochs": 3, "patience": 3},
        "analysis": ANALYSIS,
    }
    result = search(
        _mlp(), _wide_data(), space=space, trials=5, out=tmp_path, console=_quiet(), pareto="params"
    )
    study = result.study
    assert len(study.directions) == 2
    front = {t.number for t in study.best_trials}
    board = result.leaderboard
    assert {r.number for r in board.rows if r.front} == front
    out = io.StringIO()
    Console(file=out, width=200).print(board)
    assert "Pareto front marked *" in out.getvalue()
    assert result.best is not None and result.best.trial in front
    best_value = max(study.trials[n].values[0] for n in front)
    assert result.best.config["metrics"]["val_accuracy"] == pytest.approx(best_value)
    # Only the front's checkpoints are kept.
    saved = checkpoints_dir(tmp_path, result.study.study_name).glob("trial_*.pt")
    kept = {int(p.stem.split("_")[1]) for p in saved}
    assert kept and kept <= front


@pytest.mark.parametrize(
    ("budget", "why"),
    [("half", "is not a budget"), ("0", "allows no params at all"), ("0%", "allows no params")],
)
def test_an_unreadable_or_empty_budget_is_refused_before_any_work(
    tmp_path: Path, budget: str, why: str
) -> None:
    from autotune import AutotuneError

    with pytest.raises(AutotuneError, match=f"--max-params '{budget}' {why}"):
        search(
            _mlp(),
            _wide_data(),
            space={"lr": 1e-2},
            trials=2,
            out=tmp_path,
            console=_quiet(),
            max_params=budget,
        )
    assert not (tmp_path / "analysis").exists() and not (tmp_path / "checkpoints").exists()


SLIMS = {"lr": 1e-2, "prune": {"low": 0.0, "high": 0.8}, "analysis": ANALYSIS}


@pytest.mark.parametrize(
    ("option", "space", "budget", "refusal"),
    [
        # A share of the source's 1,443 parameters that comes to less than one.
        ("params", SLIMS, "1e-9", "--max-params '1e-9' allows no params at all (that share of"),
        # Below what no pruning step removes (the classifier's outputs and biases among them).
        (
            "params",
            SLIMS,
            "10",
            "--max-params '10' allows 10 parameters, fewer than the smallest model this space "
            "can build has (at least 17 of the source's 1,443",
        ),
        (
            "params",
            {"lr": 1e-2},
            "50%",
            "--max-params '50%' allows 721 parameters, but the search space removes nothing "
            "from this model, so every model it builds has the source's 1,443",
        ),
        # A share of the source's 1,507 MACs per sample that comes to less than one.
        ("macs", SLIMS, "1e-9", "--max-macs '1e-9' allows no macs at all (that share of the"),
        (
            "macs",
            {"lr": 1e-2},
            "50%",
            "--max-macs '50%' allows 753 MACs, but the search space removes nothing from this "
            "model, so every model it builds has the source's 1,507",
        ),
    ],
)
def test_a_size_budget_no_model_of_the_space_meets_is_refused_before_the_analysis(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    option: str,
    space: dict,
    budget: str,
    refusal: str,
) -> None:
    import re

    from autotune import AutotuneError
    from autotune.search import runner

    def analysed(*args: object, **kwargs: object) -> None:
        raise AssertionError("the analysis ran")

    monkeypatch.setattr(runner, "run_analyses", analysed)
    out = tmp_path / "out"
    with pytest.raises(AutotuneError, match=re.escape(refusal)) as refused:
        search(
            _mlp(), _wide_data(), space=space, trials=2, out=out, console=_quiet(),
            **{f"max_{option}": budget},
        )  # fmt: skip
    assert f"raise --max-{option}" in str(refused.value) or "raise it" in str(refused.value)
    assert not out.exists()  # refused before the study was stored: no folder left


@pytest.mark.parametrize(
    ("option", "budget", "allows"),
    [
        ("params", "150%", "150% of the source model's parameters"),
        ("params", "1", "100% of the source model's parameters"),
        ("params", "2k", "2,000 parameters, at least the source model's 1,443"),
        ("macs", "100%", "100% of the source model's MACs"),
        ("macs", "1507", "1,507 MACs, at least the source model's 1,507"),
    ],
)
def test_a_size_budget_that_limits_nothing_is_refused_before_the_analysis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str, budget: str, allows: str
) -> None:
    """Trials only remove units, so a budget of the whole source or more limits nothing: it
    was searched and exported at full size, with the budget shown in the header as if it
    applied. A share is refused before the model loads, a count once it has."""
    from autotune import AutotuneError
    from autotune.search import runner

    def analysed(*args: object, **kwargs: object) -> None:
        raise AssertionError("the analysis ran")

    monkeypatch.setattr(runner, "run_analyses", analysed)
    out = tmp_path / "out"
    with pytest.raises(AutotuneError) as refused:
        search(
            _mlp(), _wide_data(), space=SLIMS, trials=2, out=out, console=_quiet(),
            **{f"max_{option}": budget},
        )  # fmt: skip
    said = str(refused.value)
    assert said.startswith(f"--max-{option} '{budget}' allows {allows}, so it limits nothing")
    assert f"or leave --max-{option} out" in said
    assert not out.exists()


def test_a_space_that_removes_nothing_builds_models_of_the_source_macs() -> None:
    """What a trial that removes no unit changes (a Dropout added before the classifier, the
    layers it trains) leaves the MACs as the source's: the floor of --max-macs for such a space."""
    from autotune.config import TrialConfig
    from autotune.trial.build import build
    from autotune.trial.cost import count_macs

    model, x = _mlp(), torch.randn(2, 8)
    for config in (TrialConfig(dropout=0.3), TrialConfig(unfreeze=1, loss="distill")):
        built, _ = build(model, config, {}, x)
        assert any(isinstance(m, nn.Dropout) for m in built.modules()) == bool(config.dropout)
        assert count_macs(built, x) == count_macs(model, x) == 1507


def test_no_model_a_space_builds_is_smaller_than_its_floor() -> None:
    """The floor is a bound the trials never go under, whatever the rankings say and however
    far each layer is pruned: globally, per layer, with as many input features gone as may go."""
    import numpy as np

    from autotune.config import TrialConfig
    from autotune.load.models import load_model
    from autotune.rank.analysis import Analysis
    from autotune.rank.gates import sites
    from autotune.search.size_floor import smallest_params
    from autotune.search.space import load_space
    from autotune.trial.build import build

    prunes = {"prune": {"low": 0.0, "high": 0.9}, "prune_scope": ["layer", "global"]}
    drops = {**prunes, "drop_features": {"low": 0.0, "high": 0.9}}
    gen = np.random.default_rng(0)
    for model, x, space in (
        (_mlp(), torch.randn(2, 8), load_space(drops)),
        (load_model("demo").module, torch.randn(2, 1, 8, 8), load_space(prunes)),
    ):
        floor = smallest_params(model, space, x)
        assert floor is not None and not floor.exact
        found = [site for site in sites(model, x) if site.prunable]
        drop = 0.9 if space.may_be_nonzero("drop_features") else 0.0
        for i in range(6):
            # Skewed rankings: a global ranking then leaves some layers a unit or two.
            channels = {s.layer: list(gen.random(s.channels) ** (1 + 4 * i)) for s in found}
            analysis = Analysis("shap", channels, None, list(gen.random(8)) if drop else None)
            per_layer = {s.layer: float(gen.choice([0.0, 0.5, 0.9])) for s in found}
            for config in (
                TrialConfig(prune=0.9, prune_scope="global", drop_features=drop),
                TrialConfig(prune=0.9, drop_features=drop),
                TrialConfig(prune=0.3 * (i % 3), prune_scope="global"),
                TrialConfig(prune_layers=per_layer, drop_features=drop),
            ):
                built, _ = build(model, config, {"shap": analysis}, x)
                assert sum(p.numel() for p in built.parameters()) >= floor.params, config


def test_a_slimming_only_space_starts_with_the_rankings_seeds(tmp_path: Path) -> None:
    space = {
        "lr": 1e-2,
        "prune": {"low": 0.0, "high": 0.8},
        "fit": {"max_epochs": 2, "patience": 2},
        "analysis": ANALYSIS,
    }
    result = search(_mlp(), _wide_data(), space=space, trials=3, out=tmp_path, console=_quiet())
    trials = result.study.trials
    # Nothing to tune, so no stages: the recipe (nothing removed), then the seeds from the
    # rankings: prune the bottom quarter, then half.
    assert [t.params["prune"] for t in trials[1:]] == [0.0, 0.25, 0.5]
    assert all(t.user_attrs["stage"] == 0 for t in trials[1:])


def test_a_slimmed_trial_is_rebuilt_from_its_parent_and_reproduces(tmp_path: Path) -> None:
    import dataclasses

    from autotune.results.export import export_trial
    from autotune.results.finish import workspace
    from autotune.trial.checkpoints import Checkpoints

    space = {
        "lr": {"low": 3e-3, "high": 3e-2, "log": True},
        "prune": {"low": 0.2, "high": 0.6},
        "fit": {"max_epochs": 3, "patience": 3},
        "analysis": ANALYSIS,
    }
    result = search(
        _mlp(), _wide_data(), space=space, trials=4, out=tmp_path, console=_quiet(), pruner="none"
    )
    slimmed = [t for t in result.study.trials if t.user_attrs.get("stage") == 2]
    assert slimmed and all(t.state == TrialState.COMPLETE for t in slimmed)
    # The space tunes the learning rate: stage 2 scales its parent's.
    for trial in slimmed:
        parent = result.study.trials[trial.user_attrs["parent"]]
        scaled = parent.user_attrs["config"]["lr"] * trial.params["lr_scale"]
        assert trial.user_attrs["config"]["lr"] == pytest.approx(scaled)
    # No checkpoint at all: the parent is retrained, ranked again, and slimmed again.
    bare = dataclasses.replace(workspace(result.search), checkpoints=Checkpoints(None))
    for trial in slimmed:
        again = export_trial(bare, result.study, trial.number, tmp_path / f"again_{trial.number}")
        assert again.config["weights"].startswith("retrained")
        assert again.config["metrics"]["reproduces_study_value"] is True
        assert again.config["structure"]["params"]["model"] == trial.user_attrs["total_params"]


def test_a_slimmed_trial_learns_from_its_parent_and_is_judged_against_the_source(
    tiny_model: nn.Module, tiny_data: TaskData
) -> None:
    import copy

    from autotune.config import SearchSettings, TrialConfig
    from autotune.load.job import Job
    from autotune.search.prepare import make_maker
    from autotune.search.space import load_space
    from autotune.search.stages import (
        child_config,
        slimming_maker,
        slimming_space,
        stage_two_params,
    )
    from autotune.trial.flips import outputs

    space = load_space(
        {
            "lr": {"low": 1e-3, "high": 1e-2, "log": True},
            "loss": ["cross_entropy", "distill"],
            "distill_weight": {"low": 0.3, "high": 0.9},
            "prune": {"low": 0.0, "high": 0.5},
            "analysis": {"samples": 16, "background": 4, "nsamples": 2},
        }
    )
    # Stage 2 samples the loss again when the space offers distillation.
    assert {"loss", "distill_weight", "prune"} <= set(slimming_space(space).params)
    parent = TrialConfig(lr=0.007, loss="cross_entropy")
    sampled = TrialConfig(prune=0.3, loss="distill", distill_weight=0.7)
    child = child_config(parent, sampled, stage_two_params(space))
    assert (child.lr, child.prune, child.loss, child.distill_weight) == (0.007, 0.3, "distill", 0.7)
    job = Job.from_objects(tiny_model, tiny_data)
    maker = make_maker(job, SearchSettings().resolved({}))
    adapted = copy.deepcopy(tiny_model)
    with torch.no_grad():
        adapted.out.weight.mul_(-1.0)  # another model than the source
    slim = slimming_maker(maker, adapted, job, slimming_space(space))
    teacher_train, _ = slim.teacher()
    # Up to the device's float rounding: the teacher is computed where the search trains.
    expected = outputs(adapted, tiny_data.x_train).cpu()
    assert torch.allclose(teacher_train.cpu(), expected, rtol=1e-3, atol=1e-4)
    assert not torch.allclose(teacher_train, maker.teacher()[0].to(teacher_train.device))
    assert slim.reference is not None and torch.equal(slim.reference, maker.reference)


def test_a_search_short_of_time_starts_slimming_at_half_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 trials split 4 + 4 by count; a --timeout whose first half runs out during trial 3
    moves trial 3 on into stage 2, so that a search stopped by its deadline still slims."""
    import time
    import types

    from autotune.search import stages

    timeout, calls = 3600.0, iter(range(100))
    # The stages' clock alone: the runner's deadline stays real, so all 8 trials run.
    # Each trial reads the clock once until the switch: trials 1 and 2 at a quarter of the
    # time, trial 3 at 60% of it.
    fake = types.SimpleNamespace(
        perf_counter=time.perf_counter,
        monotonic=lambda: time.monotonic() + (0.25 if next(calls) < 2 else 0.6) * timeout,
    )
    monkeypatch.setattr(stages, "time", fake)
    space = {
        "lr": {"low": 3e-3, "high": 3e-2, "log": True},
        "prune": {"low": 0.2, "high": 0.6},
        "fit": {"max_epochs": 2, "patience": 2},
        "analysis": ANALYSIS,
    }
    result = search(
        _mlp(), _wide_data(), space=space, trials=8, out=tmp_path, console=_quiet(),
        pruner="none", timeout=timeout,
    )  # fmt: skip
    stages = [t.user_attrs["stage"] for t in result.study.trials[1:]]
    assert stages == [1, 1, 2, 2, 2, 2, 2, 2]
    assert result.study.user_attrs["stage_two_from"] == 3
    assert len(result.study.trials) == 9  # the deadline itself never came


def test_a_slimmed_child_out_of_reach_is_pruned_after_its_warm_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search asks ``OutOfReach`` after every stage-2 epoch and records why it stopped;
    stage 1 keeps the study's pruner. A floor above any accuracy stops every child."""
    from autotune.search import selection

    monkeypatch.setattr(selection, "OUT_OF_REACH", -1.0)  # the floor above the top trial
    space = {
        "lr": {"low": 3e-3, "high": 3e-2, "log": True},
        "prune": {"low": 0.2, "high": 0.6},
        "fit": {"max_epochs": 8, "patience": 8},
        "analysis": ANALYSIS,
    }
    result = search(_mlp(), _wide_data(), space=space, trials=4, out=tmp_path, console=_quiet())
    trials = result.study.trials
    slimmed = [t for t in trials if t.user_attrs.get("stage") == 2]
    tuned = [t for t in trials if t.user_attrs.get("stage") == 1]
    assert slimmed and tuned
    for t in slimmed:  # warm-up: a quarter of 8 epochs
        assert t.state == TrialState.PRUNED and t.user_attrs["epochs"] == 2
        assert "out of reach of the export" in t.user_attrs["stop_reason"]
    assert all(t.state == TrialState.COMPLETE for t in tuned)  # too few for the median pruner
    exported = selection.exported_trial(result.study)  # a pruned child is never exported
    assert exported is not None and trials[exported].user_attrs["stage"] == 1


def test_a_slimmed_child_that_keeps_nearly_all_of_its_parent_is_not_trained(
    tmp_path: Path,
) -> None:
    """A stage-2 child that removes under 5% of its parent's parameters is its parent trained
    on: it is stopped before its first epoch, with the reason, and never exported."""
    space = {
        "lr": {"low": 3e-3, "high": 3e-2, "log": True},
        "prune": {"low": 0.0, "high": 0.01},  # a neuron or none of each 128
        "fit": {"max_epochs": 4, "patience": 4},
        "analysis": ANALYSIS,
    }
    torch.manual_seed(0)
    wide = nn.Sequential(
        nn.Linear(8, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 3)
    )
    result = search(
        wide.eval(), _wide_data(), space=space, trials=4, out=tmp_path, console=_quiet()
    )
    trials = result.study.trials
    slimmed = [t for t in trials if t.user_attrs.get("stage") == 2]
    assert slimmed and any(t.user_attrs.get("stage") == 1 for t in trials)
    for t in slimmed:
        parent = trials[t.user_attrs["parent"]]
        assert t.user_attrs["total_params"] >= 0.95 * parent.user_attrs["total_params"]
        assert t.state == TrialState.PRUNED and not t.intermediate_values  # no epoch trained
        reason = f"not trained: a near copy of trial {parent.number}, it keeps "
        assert t.user_attrs["stop_reason"].startswith(reason)
    exported = exported_trial(result.study)
    assert exported is not None and trials[exported].user_attrs["stage"] == 1


def test_a_budget_only_a_global_ranking_can_meet_is_noted_before_the_analysis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --max-params above the floor but under what pruning every layer by the space's highest
    ratio leaves: on a ViT such a search ran its first half, then exported nothing."""
    import numpy as np

    from autotune.config import TrialConfig
    from autotune.rank.analysis import Analysis
    from autotune.rank.gates import sites
    from autotune.search import runner
    from autotune.search.size_floor import pruned_by_highest
    from autotune.search.space import load_space
    from autotune.trial.build import build

    model, data = _mlp(), _wide_data()
    space = {"lr": 1e-3, "prune": {"low": 0.0, "high": 0.7}, "prune_scope": ["layer", "global"]}
    x = data.x_val[:2]
    left = pruned_by_highest(model, load_space(space), x)
    # What a trial pruning every layer by 0.7 builds, whatever its rankings say.
    gen = np.random.default_rng(0)
    channels = {s.layer: list(gen.random(s.channels)) for s in sites(model, x) if s.prunable}
    analysis = Analysis("shap", channels, None, None)
    built, _ = build(model, TrialConfig(prune=0.7), {"shap": analysis}, x)
    assert left == sum(p.numel() for p in built.parameters()) == 201

    class Analysed(Exception):
        pass

    def analysed(*args: object, **kwargs: object) -> None:
        raise Analysed

    monkeypatch.setattr(runner, "run_analyses", analysed)
    for budget, noted in (("150", True), ("201", False)):
        console = _quiet()
        with pytest.raises(Analysed):  # the note comes before the analysis
            search(model, data, space=space, trials=2, out=tmp_path / budget, console=console,
                   max_params=budget)  # fmt: skip
        said = console.file.getvalue()  # type: ignore[attr-defined]
        assert (
            "leaves 201 parameters (13.9% of the source), over --max-params '150'" in said
        ) == noted
        assert ("only trials that rank the channels globally can go under it" in said) == noted


def test_a_size_budget_leaves_stage_one_sampling_as_without_it(tmp_path: Path) -> None:
    # Stage 1 tunes full-size models whatever the budget: the same seed must try the same
    # configurations with a budget as without one, its sampler led by their accuracy alone.
    space = {
        "lr": {"low": 1e-3, "high": 1e-1, "log": True},
        "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
        "prune": {"low": 0.2, "high": 0.6},
        "fit": {"max_epochs": 2, "patience": 2},
        "analysis": ANALYSIS,
    }

    def stage_one(budget: str | None, out: Path) -> list[dict[str, float]]:
        result = search(_mlp(), _wide_data(), space=space, trials=16, out=out,
                        console=_quiet(), pruner="none", max_params=budget)  # fmt: skip
        return [t.params for t in result.study.trials if t.user_attrs.get("stage") == 1]

    free, budgeted = stage_one(None, tmp_path / "free"), stage_one("0.7", tmp_path / "budget")
    assert len(free) == 8
    assert budgeted == free


def test_a_search_whose_trials_are_all_over_the_budget_says_how_close_they_came(
    tmp_path: Path,
) -> None:
    from autotune.search.size_floor import pruned_by_highest
    from autotune.search.space import load_space

    model, data = _mlp(), _wide_data()
    space = {
        "lr": {"low": 1e-3, "high": 1e-2, "log": True},
        "prune": {"low": 0.0, "high": 0.3},
        "prune_scope": "layer",
        "fit": {"max_epochs": 2, "patience": 2},
        "analysis": ANALYSIS,
    }
    # Above the floor, so not refused up front, but under what pruning 0.3 of each layer leaves.
    least = pruned_by_highest(model, load_space(space), data.x_val[:2])
    assert least is not None
    console = _quiet()
    result = search(model, data, space=space, trials=6, out=tmp_path, console=console,
                    max_params=str(least - 10))  # fmt: skip
    assert result.best is None
    built = [t.user_attrs["total_params"] for t in result.study.trials[1:]]
    assert min(built) == least
    # Stage 2's children cannot fit even at the highest prune: pruned untrained, saying why.
    children = [t for t in result.study.trials if t.user_attrs.get("stage") == 2]
    assert children and "fitted" not in str([t.user_attrs for t in children])
    for t in children:
        assert t.state == TrialState.PRUNED and not t.intermediate_values
        assert t.user_attrs["stop_reason"].startswith("over budget: params")
    said = console.file.getvalue()  # type: ignore[attr-defined]
    assert (
        f"has no completed trial within its budgets to export: the smallest model its trials "
        f"built has {least:,} parameters, over the {least - 10:,} --max-params allows: allow more"
    ) in " ".join(said.split())
