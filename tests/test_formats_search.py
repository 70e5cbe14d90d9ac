"""Every model format can be tuned, not only loaded."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console

from autotune import search
from autotune.load.job import ModelSpec
from autotune.load.tasks import TaskData, from_tensors

SPACE = {
    "lr": 1e-2,
    "unfreeze": {"low": 1, "high": "all"},
    "dropout": {"low": 0.0, "high": 0.2},
    "fit": {"max_epochs": 3, "patience": 3},
}


def _save(kind: str, model: torch.nn.Module, path: Path) -> None:
    if kind == "torchscript":
        torch.jit.save(torch.jit.script(model), str(path))
    else:
        batch = ({0: torch.export.Dim.AUTO},)
        torch.export.save(
            torch.export.export(model, (torch.randn(4, 8),), dynamic_shapes=batch), path
        )


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_search_tunes_and_exports_each_format(
    kind: str, tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    path = tmp_path / f"m.{'pt2' if kind == 'export' else 'pt'}"
    _save(kind, tiny_model, path)
    console = Console(file=io.StringIO(), width=200)
    result = search(
        ModelSpec(str(path)),
        tiny_data,
        space=SPACE,
        trials=2,
        out=tmp_path / "out",
        console=console,
        pruner="none",
    )
    said = " ".join(console.file.getvalue().split())  # type: ignore[attr-defined]
    # TinyNet has no dropout: the note said "models keep their dropout" of it all the same.
    program = {"torchscript": "a TorchScript program", "export": "a torch.export program"}[kind]
    assert f"note: dropout cannot be set in or added to {program}; 'dropout' is left out" in said
    assert "keep their dropout" not in said
    assert all("dropout" not in t.params for t in result.study.trials)
    best = result.leaderboard.ranked()[0]
    assert best.state == "COMPLETE" and best.gain is not None and best.gain > 0.2
    assert result.best is not None and (result.best.folder / "model.pt2").is_file() == (
        kind == "export"
    )


def test_an_export_program_with_a_fixed_batch_is_refused_with_the_fix(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    from autotune.errors import DataError

    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(tiny_model, (torch.randn(4, 8),)), path)
    with pytest.raises(DataError, match="traced with a fixed batch size"):
        search(ModelSpec(str(path)), tiny_data, space=SPACE, trials=1, out=tmp_path / "out")


def test_a_dynamic_batch_program_given_too_few_features_is_not_blamed_on_its_batch(
    tiny_model: torch.nn.Module, tmp_path: Path
) -> None:
    from autotune.errors import DataError

    path = tmp_path / "dynamic.pt2"
    batch = {0: torch.export.Dim.AUTO}
    torch.export.save(
        torch.export.export(tiny_model, (torch.randn(4, 8),), dynamic_shapes=(batch,)), path
    )
    narrow = from_tensors(torch.randn(60, 5), torch.arange(60) % 3)
    with pytest.raises(DataError, match=r"cannot take inputs of shape \(5,\)") as refused:
        search(ModelSpec(str(path)), narrow, space=SPACE, trials=1, out=tmp_path / "out")
    assert "fixed batch size" not in str(refused.value)
    assert "Give inputs of the shape the model was trained on" in str(refused.value)


def test_a_torchscript_model_searches_without_the_structural_parameters(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    path = tmp_path / "m.pt"
    _save("torchscript", tiny_model, path)
    console = Console(file=io.StringIO(), width=200)
    space = {**SPACE, "prune": {"low": 0.0, "high": 0.5}, "unfreeze_order": ["output", "shap"]}
    result = search(
        ModelSpec(str(path)), tiny_data, space=space, trials=2, out=tmp_path / "o", console=console
    )
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "torchscript models cannot be analysed, pruned or cut down" in text
    assert "'prune', 'unfreeze_order' are left out of the search" in text
    assert all("prune" not in t.params for t in result.study.trials)
    assert result.best is not None


@pytest.mark.parametrize("kind", ["torchscript", "export"])
@pytest.mark.parametrize(
    ("option", "refusal"),
    [
        ({"max_macs": "50%"}, "--max-macs '50%' does not apply to model"),
        ({"pareto": "macs"}, "--pareto macs does not apply to model"),
    ],
)
def test_macs_of_a_program_are_refused_before_the_study_is_stored(
    kind: str,
    option: dict,
    refusal: str,
    tiny_model: torch.nn.Module,
    tiny_data: TaskData,
    tmp_path: Path,
) -> None:
    from autotune.errors import AutotuneError

    path = tmp_path / f"m.{'pt2' if kind == 'export' else 'pt'}"
    _save(kind, tiny_model, path)
    out = tmp_path / "out"
    with pytest.raises(AutotuneError, match=re.escape(refusal)) as refused:
        search(ModelSpec(str(path)), tiny_data, space=SPACE, trials=1, out=out, **option)
    said = str(refused.value)
    assert "cannot be counted" in said and ("--max-params" in said or "--pareto params" in said)
    assert not out.exists()  # no study stored: the same search without the option is no change
    quiet = Console(file=io.StringIO())
    again = search(ModelSpec(str(path)), tiny_data, space=SPACE, trials=1, out=out, console=quiet)
    assert again.best is not None
