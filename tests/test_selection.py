"""How a search starts and what it picks: the space chosen for the model, the standard recipe
as the first trained trial, and a held-out split read only for the chosen model."""

from __future__ import annotations

import io
import time
from pathlib import Path

import optuna
import pytest
import torch
from conftest import TinyNet, blobs
from optuna.trial import TrialState
from rich.console import Console
from torch import nn

from autotune import search
from autotune.errors import AutotuneError
from autotune.load.job import Job
from autotune.load.tasks import TaskData, from_tensors
from autotune.results import export
from autotune.results.finalists import MIN_TRIALS
from autotune.search import runner
from autotune.search.prepare import space_for
from autotune.search.selection import (
    SELECT,
    choice_note,
    chosen_trial,
    may_be_chosen,
    standard_error,
)
from autotune.search.study import CHOSEN, LIMITS, best_trial
from autotune.search.trials import RECIPE
from autotune.trial import fit

FAST = {"fit": {"max_epochs": 3, "patience": 3}}


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def _data() -> TaskData:
    x, y = blobs(300)
    return from_tensors(
        x[:200], y[:200], x_val=x[200:260], y_val=y[200:260], x_test=x[260:], y_test=y[260:]
    )


def test_the_space_follows_the_model() -> None:
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    images = from_tensors(torch.rand(20, 1, 8, 8), torch.arange(20) % 3)
    assert space_for(Job.from_objects(conv, images))[0] == "vision"
    assert space_for(Job.from_objects(TinyNet(), _data()))[0] == "tabular"


def test_a_model_without_a_linear_classifier_is_fine_tuned_or_refused_in_one_line(
    tmp_path: Path,
) -> None:
    # Squeezenet's way: the class scores are a convolution's channels, averaged.
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    images = from_tensors(torch.rand(20, 1, 8, 8), torch.arange(20) % 3)
    space, why = space_for(Job.from_objects(conv, images))
    assert (space, why) == ("default", "no nn.Linear classifier to rank units by: fine-tuning only")
    # A space that ranks units asks for the classifier: one line, not a ValueError traceback.
    with pytest.raises(AutotuneError, match=r"^the model has no nn.Linear classifier .* pass "):
        search(conv, images, space="vision", trials=1, out=tmp_path, console=_quiet())


def test_a_search_without_a_space_runs_the_shap_analysis(tmp_path: Path) -> None:
    torch.manual_seed(0)
    console = _quiet()
    result = search(
        TinyNet().eval(), _data(), trials=2, out=tmp_path, console=console, max_epochs=2
    )
    assert result.search.space.source == "tabular"
    assert "shap" in result.analyses
    assert "space: tabular" in console.file.getvalue()  # type: ignore[attr-defined]


def test_the_first_trained_trial_is_the_standard_recipe(tmp_path: Path) -> None:
    torch.manual_seed(0)
    space = {"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "batch_size": [16, 64], **FAST}
    result = search(TinyNet().eval(), _data(), space=space, trials=4, out=tmp_path,
                    console=_quiet())  # fmt: skip
    first = result.study.trials[1]
    assert first.state == TrialState.COMPLETE and first.user_attrs.get(RECIPE)
    # lr as the recipe says; batch 32 is not in the space, so the nearest choice.
    assert first.params == {"lr": 1e-3, "batch_size": 16}
    best = result.best
    assert best is not None
    assert CHOSEN not in result.study.user_attrs  # too few trials for finalists
    # The top trial is never below the recipe; the export is within one standard error of it.
    top = best_trial(result.study)
    assert top is not None and top.values[0] >= first.user_attrs["val_accuracy"]
    floor = top.values[0] - standard_error(top.values[0], top.user_attrs["samples"])
    assert best.config["metrics"]["val_accuracy"] >= floor
    assert best.config["chosen"].startswith("the ")


def test_the_test_split_is_scored_once_for_the_chosen_model_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data()
    reads: list[float] = []

    def spying(evaluate):  # type: ignore[no-untyped-def]
        def wrapper(model, x, y, *rest):  # type: ignore[no-untyped-def]
            test = data.x_test
            if test is not None and x.shape == test.shape and torch.equal(x.cpu(), test):
                reads.append(time.time())
            return evaluate(model, x, y, *rest)

        return wrapper

    for module in (fit, runner, export):
        monkeypatch.setattr(module, "evaluate", spying(module.evaluate))
    torch.manual_seed(0)
    space = {"lr": {"low": 1e-3, "high": 3e-2, "log": True}, **FAST}
    result = search(TinyNet().eval(), data, space=space, trials=4, out=tmp_path, console=_quiet())
    assert all("test_accuracy" not in t.user_attrs for t in result.study.trials)
    assert len(reads) == 1
    finished = [t.datetime_complete for t in result.study.trials if t.datetime_complete]
    assert reads[0] >= max(finished).timestamp()
    assert result.best_config is not None
    assert result.best_config["metrics"]["test_accuracy"] is not None


def test_refit_trains_the_chosen_configuration_on_train_and_validation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    space = {"lr": {"low": 1e-3, "high": 3e-2, "log": True}, **FAST}
    result = search(
        TinyNet().eval(), _data(), space=space, trials=2, out=tmp_path, console=_quiet(), refit=True
    )
    config = result.best_config
    assert config is not None
    chosen = result.study.trials[config["trial"]]
    epochs = chosen.user_attrs["best_epoch"]
    assert config["weights"].startswith(
        f"refit on the training and validation samples (260) for {epochs} epochs"
    )
    assert config["metrics"]["validation_held_out"] is False
    assert config["metrics"]["test_accuracy"] is not None


def test_a_timeout_stops_starting_trials(tmp_path: Path) -> None:
    torch.manual_seed(0)
    space = {"lr": {"low": 1e-3, "high": 3e-2, "log": True}, **FAST}
    result = search(
        TinyNet().eval(), _data(), space=space, trials=50, out=tmp_path, console=_quiet(),
        timeout=0.5,
    )  # fmt: skip
    finished = [t for t in result.study.trials if not t.user_attrs.get("baseline")]
    assert 1 <= len(finished) < 50
    assert result.best is not None


def test_trials_tied_on_accuracy_rank_by_validation_loss() -> None:
    study = optuna.create_study(direction="maximize")
    for acc, loss in [(0.9, 0.5), (0.95, 0.40), (0.95, 0.20), (0.95, 0.30)]:
        study.add_trial(
            optuna.trial.create_trial(value=acc, user_attrs={"val_accuracy": acc, "val_loss": loss})
        )
    best = best_trial(study)
    assert best is not None and best.number == 2
    minimised = optuna.create_study(direction="minimize")
    for acc, loss in [(0.8, 0.3), (0.9, 0.3), (0.7, 0.4)]:
        minimised.add_trial(
            optuna.trial.create_trial(
                value=loss, user_attrs={"val_accuracy": acc, "val_loss": loss}
            )
        )
    best = best_trial(minimised)
    assert best is not None and best.number == 1


def test_the_export_is_the_finalist_with_the_best_mean_over_fresh_seeds(tmp_path: Path) -> None:
    torch.manual_seed(0)
    space = {"lr": {"low": 1e-3, "high": 3e-2, "log": True}, **FAST}
    console = _quiet()
    result = search(TinyNet().eval(), _data(), space=space, trials=MIN_TRIALS, out=tmp_path,
                    console=console, finalists=3)  # fmt: skip
    chosen = result.study.user_attrs[CHOSEN]
    ranked = sorted(
        (
            t
            for t in result.study.trials
            if t.state == TrialState.COMPLETE and not t.user_attrs.get("baseline")
        ),
        key=lambda t: (t.values[0], -t.user_attrs["val_loss"], -t.number),
        reverse=True,
    )
    assert chosen["top"] == [t.number for t in ranked[:3]]
    scores = {int(n): runs for n, runs in chosen["finalists"].items()}
    assert {t.number for t in ranked[:3]} <= set(scores)
    for number, runs in scores.items():
        assert len(runs) == 3  # the search's run and 2 fresh seeds
        own = result.study.trials[number].user_attrs["val_accuracy"]
        assert runs[0][0] == own
    means = {n: sum(r[0] for r in runs) / 3 for n, runs in scores.items()}
    assert means[chosen["trial"]] == max(means.values())
    # The recipe is always a finalist: the export is never worse than it on the mean.
    assert result.study.trials[1].user_attrs.get(RECIPE) and 1 in scores
    assert result.best is not None and result.best.trial == chosen["trial"]
    assert "finalists, validation accuracy" in console.file.getvalue()  # type: ignore[attr-defined]


def test_a_recorded_choice_holds_until_the_top_trials_change() -> None:
    study = optuna.create_study(direction="maximize")
    for acc in (0.9, 0.95, 0.8):
        study.add_trial(
            optuna.trial.create_trial(value=acc, user_attrs={"val_accuracy": acc, "val_loss": 1})
        )
    study.set_user_attr(CHOSEN, {"trial": 0, "top": [1, 0]})
    assert chosen_trial(study).number == 0  # type: ignore[union-attr]
    study.add_trial(
        optuna.trial.create_trial(value=0.99, user_attrs={"val_accuracy": 0.99, "val_loss": 1})
    )
    assert chosen_trial(study).number == 3  # type: ignore[union-attr]  # a new top trial


def _scored(direction: str, rows: list[tuple[float, int]], samples: int = 200) -> optuna.Study:
    """A study of trials with these (validation accuracy, parameters), the baseline first."""
    study = optuna.create_study(direction=direction)
    for i, (acc, params) in enumerate(rows):
        attrs = {"val_accuracy": acc, "val_loss": 1.0 - acc, "total_params": params}
        attrs |= {"samples": samples, **({"baseline": True} if i == 0 else {})}
        value = acc if direction == "maximize" else 1.0 - acc
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs=attrs))
    return study


def test_without_a_budget_the_export_is_the_smallest_model_within_one_standard_error() -> None:
    # 200 validation samples at 0.95: a standard error of 0.016 (plus-four estimate).
    rows = [(0.5, 1000), (0.95, 1000), (0.94, 400), (0.935, 300), (0.90, 100)]
    study = _scored("maximize", rows)
    assert abs(standard_error(0.95, 200) - 0.0165) < 1e-3
    study.set_user_attr(SELECT, "simplest")
    study.set_user_attr(LIMITS, {})
    chosen = chosen_trial(study)
    assert chosen is not None and chosen.number == 3  # 0.935 is within 0.95 - 0.0165; 0.90 not
    assert "within one standard error" in choice_note(study) and "trial 1" in choice_note(study)
    study.set_user_attr(SELECT, "top")
    assert chosen_trial(study).number == 1  # type: ignore[union-attr]
    # Under a size budget the user chose the size: the top trial within it.
    study.set_user_attr(SELECT, "simplest")
    study.set_user_attr(LIMITS, {"params": 1000})
    assert chosen_trial(study).number == 1  # type: ignore[union-attr]
    # Never below the standard recipe on validation, even within the band.
    with_recipe = _scored("maximize", rows)
    with_recipe.set_user_attr(SELECT, "simplest")
    with_recipe.add_trial(
        optuna.trial.create_trial(
            value=0.94, user_attrs={"val_accuracy": 0.94, "val_loss": 0.06, "samples": 200,
                                    "total_params": 1000, RECIPE: True},
        )
    )  # fmt: skip
    assert chosen_trial(with_recipe).number == 2  # type: ignore[union-attr]  # 0.94, 400
    # A small validation split widens the band: one sample in 34 is 3 points.
    few = _scored("maximize", [(0.5, 1000), (1.0, 1000), (33 / 34, 200), (32 / 34, 50)], 34)
    few.set_user_attr(SELECT, "simplest")
    assert chosen_trial(few).number == 2  # type: ignore[union-attr]
    # The loss metric has no binomial standard error: the top trial.
    by_loss = _scored("minimize", rows)
    by_loss.set_user_attr(SELECT, "simplest")
    assert chosen_trial(by_loss).number == 1  # type: ignore[union-attr]


def test_a_trial_that_may_become_the_smallest_within_one_standard_error_keeps_its_weights() -> None:
    """The search saves the weights of a trial that the one-standard-error rule could export,
    not only of a new best, so the export need not train it again."""
    rows = [(0.5, 1000), (0.95, 1000), (0.935, 300)]  # the choice now: trial 2, 300 parameters
    study = _scored("maximize", rows)
    study.set_user_attr(SELECT, "simplest")
    assert may_be_chosen(study, 0.94, 200)  # within 0.95 - 0.0165, and smaller
    assert not may_be_chosen(study, 0.94, 300)  # no smaller than the choice
    assert not may_be_chosen(study, 0.93, 200)  # below the band
    study.set_user_attr(LIMITS, {"params": 1000})  # a budget: the top trial is exported
    assert not may_be_chosen(study, 0.94, 200)


def test_a_slimmed_child_stops_once_it_is_out_of_reach_of_the_export() -> None:
    """Stage 2 stops a child, after its warm-up, whose best is more than three standard
    errors under the top trial: the one-standard-error rule would never export it."""
    from autotune.config import SearchSettings
    from autotune.search.selection import reach_floor
    from autotune.search.stages import OutOfReach

    study = _scored("maximize", [(0.5, 1000), (0.95, 1000), (0.93, 400)], samples=1000)
    floor = reach_floor(study)
    assert floor == pytest.approx(0.95 - 3 * standard_error(0.95, 1000))  # 0.929
    reach = OutOfReach.of(study, SearchSettings(max_epochs=20))
    assert reach is not None and reach.warmup == 5  # the median pruner's warm-up
    # A pruned-too-far child: low from the start, still low after its warm-up.
    assert [reach.stops(e, v) for e, v in enumerate([0.30, 0.70, 0.85, 0.90, 0.91], 1)] == [
        False, False, False, False, True,
    ]  # fmt: skip
    assert "out of reach" in reach.why(5) and "0.9100" in reach.why(5)
    # Its best counts, not its last epoch: a child that was within reach goes on.
    near = OutOfReach.of(study, SearchSettings(max_epochs=20))
    assert near is not None
    assert not any(near.stops(e, v) for e, v in enumerate([0.93, 0.92, 0.92, 0.92, 0.92, 0.9], 1))
    # No pruning asked for, a Pareto search, or no accuracy standard error: never stopped.
    assert OutOfReach.of(study, SearchSettings(max_epochs=20, pruner="none")) is None
    assert OutOfReach.of(study, SearchSettings(max_epochs=20, pareto="params")) is None
    assert reach_floor(_scored("minimize", [(0.5, 1000), (0.95, 1000)])) is None


def test_a_child_keeping_pace_with_the_top_child_at_its_age_goes_on() -> None:
    """Where the top trial is a stage-2 child, a later child is judged at each epoch against
    what the top had reached by then: on the ViT the top climbed from 0.866 after its warm-up
    to 0.906, and the fixed floor stopped children at 0.859-0.863 then."""
    from autotune.config import SearchSettings
    from autotune.search.stages import OutOfReach

    study = _scored("maximize", [(0.5, 1000), (0.88, 1000)], samples=1000)
    climb = [0.70, 0.80, 0.84, 0.85, 0.866, 0.88, 0.89, 0.90, 0.905, 0.906]
    attrs = {"val_accuracy": 0.906, "total_params": 400, "samples": 1000, "stage": 2}
    study.add_trial(
        optuna.trial.create_trial(
            value=0.906, user_attrs=attrs, intermediate_values=dict(enumerate(climb, 1))
        )
    )
    fixed = 0.906 - 3 * standard_error(0.906, 1000)  # 0.878
    settings = SearchSettings(max_epochs=20)
    # At the top's pace, under the fixed floor after 5 epochs: goes on...
    keeping = OutOfReach.of(study, settings)
    assert keeping is not None and keeping.leader == 2
    assert not any(keeping.stops(e, v) for e, v in enumerate(climb[:5], 1))
    assert keeping.line is not None and keeping.line < fixed
    # ...and stops once it falls three standard errors behind where the top stood at its age.
    assert not keeping.stops(6, 0.866) and not keeping.stops(7, 0.866)
    assert keeping.stops(8, 0.866)  # the top had 0.90 by epoch 8: the line is 0.872
    assert "under the best trial 2 had reached by epoch 8" in keeping.why(8)
    # A child far behind the top at the same age stops after its warm-up, as before.
    behind = OutOfReach.of(study, settings)
    assert behind is not None
    assert [behind.stops(e, v) for e, v in enumerate([0.6, 0.7, 0.75, 0.78, 0.80], 1)][-1]
    # A top trial of stage 1 (its curve starts from the source model) sets no pace.
    study_one = _scored("maximize", [(0.5, 1000), (0.906, 1000)], samples=1000)
    plain = OutOfReach.of(study_one, settings)
    assert plain is not None and plain.pace == {} and plain.floor == pytest.approx(fixed)
    assert plain.stops(5, 0.866) and "standard errors under the top)" in plain.why(5)


def test_a_slimmed_child_that_removes_under_a_twentieth_of_its_parent_is_not_trained() -> None:
    """Stage 2 trains a child that keeps under 95% of its parent's parameters; at 95% or more
    it is its parent trained on, and is refused with the parent and the share it keeps. A
    Pareto search, where any size may join the front, trains it."""
    from autotune.config import SearchSettings
    from autotune.search.stages import near_copy

    parent = _scored("maximize", [(0.5, 1000), (0.95, 1000)]).trials[1]
    settings = SearchSettings()
    assert near_copy(949, parent, settings) is None
    why = near_copy(950, parent, settings)
    assert why == "not trained: a near copy of trial 1, it keeps 95% of its parameters"
    assert near_copy(1000, parent, settings) is not None
    assert near_copy(1000, parent, SearchSettings(pareto="params")) is None


def test_the_note_says_top_within_the_budgets_when_a_trial_over_them_scored_higher() -> None:
    # Trial 1 scored higher but is over the size budget: trial 2 is the top only within it.
    study = _scored("maximize", [(0.5, 400), (0.95, 1000), (0.90, 400)])
    study.set_user_attr(SELECT, "simplest")
    study.set_user_attr(LIMITS, {"params": 500})
    assert chosen_trial(study).number == 2  # type: ignore[union-attr]
    assert choice_note(study) == "the top trial within the budgets on validation"
    study.set_user_attr(LIMITS, {})
    study.set_user_attr(SELECT, "top")
    assert choice_note(study) == "the top trial on validation"


@pytest.mark.parametrize("kind", ["TorchScript", "torch.export"])
def test_a_program_passed_from_python_is_fine_tuned_as_a_program(kind: str, tmp_path: Path) -> None:
    # A TorchScript module passed as an object was searched as an eager one: its analysis
    # failed ("register_forward_pre_hook is not supported on ScriptModules").
    torch.manual_seed(0)
    console = _quiet()
    data = _data()
    model = TinyNet().eval()
    if kind == "TorchScript":
        program = torch.jit.script(model)
    else:
        batch = ({0: torch.export.Dim.AUTO},)  # any batch size, as the README says
        program = torch.export.export(model, (data.x_val[:2],), dynamic_shapes=batch)
    result = search(program, data, trials=1, out=tmp_path, console=console, max_epochs=2)
    said = [line for line in console.file.getvalue().splitlines() if line.startswith("space:")]  # type: ignore[attr-defined]
    # Not "a torchscript model ...; --space default fine-tunes only": it already does.
    assert said == [
        f"space: default (a {kind} program cannot be analysed or pruned: fine-tuning only)"
    ]
    baseline, recipe = result.study.trials[:2]
    assert recipe.state == TrialState.COMPLETE
    # It trained: a copy's parameters that could not take gradients left the loss as it was.
    assert recipe.user_attrs["val_loss"] != baseline.user_attrs["val_loss"]
