from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest
import yaml
from rich.console import Console
from torch import nn

from autotune import search
from autotune.config import TrialConfig
from autotune.errors import SpaceError
from autotune.load.tasks import TaskData
from autotune.search.space import builtin_spaces, load_space


def test_default_space_ships_with_the_package() -> None:
    assert "default" in builtin_spaces()
    space = load_space("default")
    assert {"lr", "optimizer", "loss", "unfreeze", "dropout"} <= set(space.params)
    assert space.fit == {"max_epochs": 20, "patience": 5}


def test_conditional_parameters_are_sampled_only_where_they_apply() -> None:
    space = load_space("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        config = space.suggest(trial, n_layers=4)
        assert ("momentum" in trial.params) == (config.optimizer == "sgd")
        assert ("focal_gamma" in trial.params) == (config.loss == "focal")
        assert ("label_smoothing" in trial.params) == (config.loss == "label_smoothing")
        assert config.unfreeze is not None and 1 <= config.unfreeze <= 4
        study.tell(trial, 0.0)


def test_fixed_values_and_all() -> None:
    space = load_space({"optimizer": "sgd", "unfreeze": "all", "lr": 0.01})
    trial = optuna.create_study().ask()
    assert space.suggest(trial, 3) == TrialConfig(optimizer="sgd", unfreeze=None, lr=0.01)
    assert trial.params == {}


@pytest.mark.parametrize(
    "text,message",
    [
        ("lrr: 0.1", "unknown parameter 'lrr'"),
        ("lr: {low: 0.1, high: 0.01}", "parameter 'lr': 'low' <= 'high' must hold"),
        ("lr: {low: 0, high: 0.1, log: true}", "a log range needs 'low' > 0"),
        ("optimizer: [adamw, adam]", "'adam' is not one of \\['adamw', 'sgd'\\]"),
        ("loss: {low: 1, high: 2}", "takes a list of choices"),
        ("batch_size: {low: 8.5, high: 64}", "integer bounds"),
        ("lr: {high: 0.1}", "needs 'low' and 'high'"),
        ("lr: [0.1, fast]", "'fast' is not a number"),
        ("fit: {epochs: 3}", "'fit' may only set"),
        ("lr: [unclosed", "not valid YAML"),
        ("- a list", "must be a mapping"),
    ],
)
def test_broken_space_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=message):
        load_space(path)


@pytest.mark.parametrize(
    "text,message",
    [
        ("lr: .nan", "parameter 'lr': nan is not a finite number"),
        ("lr: {low: 1.0e-4, high: .inf, log: true}", "parameter 'lr': 'high' must be a finite"),
        ("weight_decay: {low: .nan, high: 0.1}", "'low' must be a finite number, got nan"),
        ("focal_gamma: [2.0, .inf]", "parameter 'focal_gamma': inf is not a finite number"),
        ("dropout: {low: 0.0, high: 0.5, step: .inf}", "'step' must be a positive finite"),
    ],
)
def test_nan_and_inf_are_refused_naming_the_file_key_and_value(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=message) as info:
        load_space(path)
    assert f"search space {str(path)!r}" in str(info.value)


def test_unknown_space_name_lists_the_shipped_ones() -> None:
    with pytest.raises(SpaceError, match="use one of \\['default'"):
        load_space("nonexistent")


def test_slimming_parameters_parse_and_sample_per_layer() -> None:
    space = load_space(
        {
            "prune_layers": {"low": 0.0, "high": 0.5},
            "importance": ["shap", "l1"],
            "unfreeze_order": ["output", "shap"],
            "analysis": {"samples": 64},
        }
    )
    assert space.analysis == {"samples": 64}
    assert space.uses_rankings() and space.methods() == ["shap", "l1"]
    trial = optuna.create_study().ask()
    config = space.suggest(trial, 4, ("a", "b"))
    assert set(trial.params) >= {"prune:a", "prune:b", "importance", "unfreeze_order"}
    assert config.prune_layers == {"a": trial.params["prune:a"], "b": trial.params["prune:b"]}
    assert not load_space("default").uses_rankings()
    assert load_space("vision").uses_rankings() and load_space("tabular").methods() == ["shap"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"prune": {"low": 0.0, "high": 0.99}}, "must be in \\[0, 0.9\\]"),
        ({"prune": 0.3, "prune_layers": {"low": 0, "high": 0.5}}, "are alternatives"),
        ({"importance": ["shap", "magic"]}, "'magic' is not one of"),
        ({"analysis": {"samples": 0}}, "analysis.samples must be a positive integer"),
        ({"analysis": {"kernel": "rbf"}}, "'analysis' may only set"),
        ({"analysis": {"explainer": "kernel"}}, "analysis.explainer must be 'gradient' or 'deep'"),
    ],
)
def test_bad_slimming_parameters_name_the_fix(raw: dict, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        load_space(raw)


def test_a_yaml_tag_is_refused_in_one_line_naming_file_line_and_tag(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("fit: {max_epochs: 2}\nlr: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert "\n" not in message and "^" not in message
    assert f"{str(path)!r}, line 2" in message
    assert "!!python/object/apply:os.system is not allowed" in message


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("lr: {low: 1.0e-3, high: 1.0e-2}\nbatch_size: [32]\nlr: 0.01\n", "lr", (1, 3)),
        ("lr: 0.01\nfit:\n  max_epochs: 4\n  max_epochs: 2\n", "max_epochs", (3, 4)),
    ],
)
def test_a_key_given_twice_is_refused_naming_it_and_its_lines(
    tmp_path: Path, text: str, key: str, lines: tuple[int, int]
) -> None:
    from typer.testing import CliRunner

    from autotune.cli import app

    path = tmp_path / "space.yaml"
    path.write_text(text)
    # YAML kept the last without a word: lr 0.01, or 2 epochs.
    refusal = (
        f"search space {str(path)!r}, line {lines[1]}: {key!r} is given twice (first on line "
        f"{lines[0]}), and YAML keeps the last without a word: keep one"
    )
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(info.value) == refusal
    args = ["search", "--model", "demo", "--space", str(path), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {refusal}"


def test_a_yaml_merge_key_may_still_be_overridden() -> None:
    import yaml

    from autotune.search.values import SpaceLoader

    text = "base: &fit {max_epochs: 4, patience: 2}\nfit: {<<: *fit, patience: 3}\n"
    assert yaml.load(text, Loader=SpaceLoader)["fit"] == {"max_epochs": 4, "patience": 3}


@pytest.mark.parametrize("content", [b"\xff\xfe lr: 0.01", b"PK\x03\x04\x80\x02 a model's bytes"])
def test_a_space_file_that_is_not_utf8_text_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "space.yaml"
    path.write_bytes(content)
    with pytest.raises(
        SpaceError, match=r"space\.yaml' is not YAML text \(byte \d+ is not UTF-8\)"
    ):
        load_space(path)


def test_a_number_in_e_notation_without_a_dot_is_a_number(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-3 as text; users write it so (a learning rate).
    path = tmp_path / "space.yaml"
    path.write_text(
        "lr: {low: 1e-4, high: 3E-2, log: true}\nweight_decay: 1e-5\nfit: {max_epochs: 2}\n"
    )
    space = load_space(path)
    assert (space.params["lr"].low, space.params["lr"].high) == (1e-4, 3e-2)
    assert space.params["weight_decay"].fixed == 1e-5
    path.write_text("optimizer: 1e3x\n")  # not a number: still text, refused as a choice
    with pytest.raises(SpaceError, match="'1e3x' is not one of"):
        load_space(path)


@pytest.mark.parametrize(
    ("chosen", "applied", "unused"),
    [
        (
            {"optimizer": "adamw", "loss": "cross_entropy"},
            set(),
            {"momentum", "label_smoothing", "focal_gamma", "distill_weight", "distill_temperature"},
        ),
        (
            {"optimizer": "sgd", "loss": "focal"},
            {"momentum", "focal_gamma"},
            {"label_smoothing", "distill_weight", "distill_temperature"},
        ),
    ],
)
def test_config_yaml_lists_only_the_parameters_the_trial_applied(
    tiny_model: nn.Module,
    tiny_data: TaskData,
    tmp_path: Path,
    chosen: dict[str, str],
    applied: set[str],
    unused: set[str],
) -> None:
    """An adamw trial's config.yaml said ``momentum: 0.9``, a cross_entropy one's
    ``label_smoothing: 0.1`` and ``focal_gamma: 2.0``: read as settings it trained with."""
    space = {"lr": 1e-2, **chosen, "fit": {"max_epochs": 1, "patience": 1}}
    console = Console(file=io.StringIO())
    result = search(tiny_model, tiny_data, space=space, trials=1, out=tmp_path, console=console)
    again = result.export(tmp_path / "again", trial=1)  # rebuilt from the study, as before
    for bundle in (tmp_path / "best", tmp_path / "again"):
        params = yaml.safe_load((bundle / "config.yaml").read_text())["params"]
        assert {"lr", "optimizer", "loss", *applied} <= set(params)
        assert not unused & set(params)
        assert {k: params[k] for k in chosen} == chosen
    assert again.config["metrics"]["reproduces_study_value"]
