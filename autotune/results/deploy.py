"""The model files of an exported bundle: ``model.pt`` (pickled or TorchScript) and ``model.pt2``
(``torch.export``), written atomically; with ``--export-preprocessing`` the program has the input
normalisation inside, so the deployed model takes raw images scaled to [0, 1]."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from autotune.errors import first_line
from autotune.paths import out_of_space, write_atomically
from autotune.results.bundle_files import not_written


class Normalized(nn.Module):
    """``model((x - mean) / std)``, per channel."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


class SelectColumns(nn.Module):
    """``model(x[:, columns])``: a model that dropped input columns, taking the data's own."""

    columns: torch.Tensor

    def __init__(self, model: nn.Module, columns: list[int]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("columns", torch.tensor(columns, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.index_select(1, self.columns))


def with_preprocessing(
    model: nn.Module, example: torch.Tensor, preprocessing: dict[str, Any]
) -> tuple[nn.Module, torch.Tensor, str] | str:
    """``model`` taking raw [0, 1] images, a raw example batch to trace it with, and how to load
    the saved program; or why there is nothing to include.

    ``example`` is a batch of model inputs (normalised): its raw images trace the program.
    """
    stats = preprocessing.get("normalize")
    if not stats:
        return "no normalisation to include: the model takes images scaled to [0, 1] already"
    wrapped = Normalized(model, stats["mean"], stats["std"]).eval()
    raw = example * wrapped.std + wrapped.mean
    size = preprocessing.get("crop")
    shape = f"{preprocessing.get('channels')}x{size}x{size}" if size else "the input's shape"
    how = (
        "torch.export.load('model.pt2').module()  # needs only torch; takes raw images scaled "
        f"to [0, 1] ({shape}, shorter side resized then centre-cropped): normalisation inside"
    )
    return wrapped, raw, how


def save_model(
    model: nn.Module,
    example: torch.Tensor,
    folder: Path,
    preprocessing: dict[str, Any] | None = None,
    columns: tuple[list[int], torch.Tensor] | None = None,
) -> dict[str, str]:
    """Save ``model`` in every format it supports; returns file name -> how to load it, or why
    it was not written (a model holding a lambda cannot be pickled, some cannot be exported).
    With ``preprocessing`` (``--export-preprocessing``), ``model.pt2`` takes raw images. With
    ``columns`` (the input columns the model kept, and a batch of the data's full rows),
    ``model.pt2`` takes the data's rows as they come and selects the columns inside, while
    ``model.pt`` stays the model itself, taking the kept columns."""
    files: dict[str, str] = {}
    if isinstance(model, torch.jit.ScriptModule):
        files["model.pt"] = save_file(
            folder / "model.pt",
            lambda f: _save_torchscript(model, f),
            "torch.jit.load('model.pt')  # TorchScript" + _model_takes(preprocessing, columns),
            "torch.jit.save",
        )
    elif not isinstance(model, torch.fx.GraphModule):
        files["model.pt"] = save_file(
            folder / "model.pt",
            lambda f: torch.save(model, f),
            "torch.load('model.pt', weights_only=False)  # a pickled module: needs the classes "
            "it was built from importable"
            + _class_folders(model, folder)
            + _autotune_classes(model)
            + _model_takes(preprocessing, columns),
            "pickling",
        )

    program, inputs, how = deployable(model, example, preprocessing, columns)
    files["model.pt2"] = save_file(
        folder / "model.pt2", lambda f: _save_program(program, inputs, f), how, "torch.export"
    )
    return files


def _class_folders(model: nn.Module, bundle: Path) -> str:
    """Which of ``model``'s modules outside torch and autotune unpickle only with their folder
    on the import path, and that folder relative to the ``bundle``'s (the card says to run from
    there; a bundle is shared, so no absolute path of this machine is written): a class read
    from ``--arch net.py:Net`` is pickled under the bare module name ``net``, which the
    bundle's folder does not hold. Modules installed as packages import anywhere they are
    installed: not named."""
    folders: dict[str, str] = {}
    for name in sorted({type(m).__module__ for m in model.modules()}):
        file = getattr(sys.modules.get(name), "__file__", None)
        # A script's __main__ classes import from no folder: the loading script must define them.
        if name.split(".")[0] in ("torch", "autotune", "__main__") or file is None:
            continue
        path = Path(file).resolve()
        # The folder that holds the top package: pkg/sub.py's parent's parent for pkg.sub.
        folder = path.parents[name.count(".") + (path.name == "__init__.py")]
        if not {"site-packages", "dist-packages"} & set(folder.parts):
            folders[name] = os.path.relpath(folder, bundle.resolve())
    if not folders:
        return ""
    search_path = os.pathsep.join(dict.fromkeys(folders.values()))
    names = ", ".join(f"{name} from {folder}" for name, folder in folders.items())
    return f" (module {names}: run with PYTHONPATH={shlex.quote(search_path)})"


def _autotune_classes(model: nn.Module) -> str:
    """Where ``model`` holds autotune's own modules (a torchvision ViT's attention, replaced as
    it loads), which unpickle only where autotune is installed."""
    modules = {type(m).__module__ for m in model.modules()}
    ours = sorted(name for name in modules if name.split(".")[0] == "autotune")
    return f", and autotune installed ({', '.join(ours)})" if ours else ""


def _model_takes(preprocessing: dict[str, Any] | None, columns: object) -> str:
    """What ``model.pt``, the model itself, takes where ``model.pt2`` takes something else."""
    if columns:
        return "; takes the kept columns only (structure.inputs.indices)"
    if preprocessing and preprocessing.get("normalize"):
        return "; takes normalised images (data.preprocessing.normalize)"
    return ""


def deployable(
    model: nn.Module,
    example: torch.Tensor,
    preprocessing: dict[str, Any] | None = None,
    columns: tuple[list[int], torch.Tensor] | None = None,
) -> tuple[nn.Module, torch.Tensor, str]:
    """What ``model.pt2`` (and ``model.onnx``) hold: the model with the column selection or the
    normalisation inside (see ``save_model``), a batch of the inputs it takes (as many as
    ``example`` has), and how to load the program."""
    program, inputs, how = (
        model,
        example,
        "torch.export.load('model.pt2').module()  # needs only torch",
    )
    if columns is not None:
        kept, rows = columns
        program, inputs = SelectColumns(model, kept).eval(), rows[: len(example)]
        how += f"; takes the data's {rows.shape[1]} columns and selects its {len(kept)} inside"
    if preprocessing is not None:
        deployed = with_preprocessing(model, example, preprocessing)
        if isinstance(deployed, str):
            how += f"; {deployed}"
        else:
            program, inputs, how = deployed
    return program, inputs, how


def _save_torchscript(model: torch.jit.ScriptModule, f: BinaryIO) -> None:
    """A TorchScript source exports as TorchScript (``torch.export`` does not take a
    ``ScriptModule``), without torch's deprecation warning: the user did nothing wrong."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit", FutureWarning)
        torch.jit.save(model, f)


@contextlib.contextmanager
def exporter_quiet() -> Iterator[None]:
    """``torch.export`` (and the ONNX exporter on it) prints its traced graph and warnings to
    stderr when it fails on a model: dozens of lines in the user's log, where the bundle's
    files already say in one line which file was not written and why (its exception)."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def _save_program(model: nn.Module, example: torch.Tensor, f: BinaryIO) -> None:
    """``torch.export`` ``model`` with a free batch size and save it to ``f``."""
    with exporter_quiet():
        dims = ({0: torch.export.Dim.AUTO},)
        program = torch.export.export(model, (example,), dynamic_shapes=dims)
    # Stack traces name files of this machine (the user's code, site-packages): not shipped.
    for node in program.graph.nodes:
        node.meta.pop("stack_trace", None)
    torch.export.save(program, f)


def save_file(path: Path, write: Any, how: str, what: str) -> str:
    """Write one model file (see ``save_model``); ``how`` to load it, else why it is missing."""
    try:
        write_atomically(path, write, keep_old=False)
    except Exception as e:
        if out_of_space(e):
            raise  # no fault of the model's: the whole export stops
        return not_written(f"{what} failed ({first_line(e)[:200]})")
    return how
