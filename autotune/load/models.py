"""Load a trained model from any supported file format, safely by default.

Formats: TorchScript archives, ``torch.export`` programs (``.pt2``), state_dicts plus an
architecture (``torchvision:resnet18``, ``package.module:ClassName``), and pickled full modules
(which run code when unpickled, so they need ``trust_model=True``).
"""

from __future__ import annotations

import copy
import hashlib
import io
import pickle
import re
import types
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autotune.errors import ModelLoadError, unreadable_file
from autotune.load.anatomy import set_training
from autotune.load.architecture import build_arch, import_code, refuse_with_own_network
from autotune.load.demo import demo_model
from autotune.load.trust import program_hazards, trust_needed

FORMATS = ("torchscript", "export", "state_dict", "pickle")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for the search, with what is needed to describe where it came from."""

    module: nn.Module
    """The network, on the CPU, in eval mode."""
    path: str
    """The file it was read from."""
    format: str
    """One of ``FORMATS``."""
    sha256: str
    """Hash of the file's bytes: the exported config names the exact source model."""
    arch: str | None = None
    """The architecture spec used to build a state_dict's network, if any."""

    @property
    def is_program(self) -> bool:
        """A TorchScript or torch.export program: no hooks, no resizing, its dropout fixed."""
        return self.format in ("torchscript", "export")

    @property
    def kind(self) -> str:
        """The format in a user's words, for messages: "a TorchScript program"."""
        programs = {"torchscript": "a TorchScript program", "export": "a torch.export program"}
        return programs.get(self.format, f"a {self.format} model")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    trust_model: bool = False,
    code: str | Path | None = None,
) -> LoadedModel:
    """Load ``path`` (or the built-in ``"demo"`` model) as an ``nn.Module`` in eval mode.

    Args:
        path: A model file, or ``"demo"``.
        arch: For a state_dict file: ``torchvision:NAME``, ``package.module:ClassName`` or
            ``path/to/file.py:ClassName``.
        num_classes: Passed to the architecture's constructor as ``num_classes``.
        trust_model: Allow unpickling a full module. Unpickling runs code from the file.
        code: A Python file defining the classes a pickled module or ``arch`` refers to.
    """
    if str(path) == "demo":
        path, arch = demo_model(arch, num_classes)
    path = Path(path)
    if not path.is_file():
        where = "is a folder" if path.is_dir() else "does not exist"
        raise ModelLoadError(
            f"model file {str(path)!r} {where}: pass the path of a model file "
            "(TorchScript, .pt2, state_dict or pickled module), or 'demo'"
        )
    kind = _sniff_format(path)
    if kind != "torch.save":  # a program holds its network: --arch could change nothing
        refuse_with_own_network(str(path), kind, arch, num_classes)
    code_module = import_code(code) if code is not None else None
    if kind == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = _read(path, lambda: torch.jit.load(str(path), map_location="cpu"))
        loaded = LoadedModel(module, str(path), "torchscript", file_sha256(path))
    elif kind == "export":
        module = _load_program(path, trust_model)
        loaded = LoadedModel(module, str(path), "export", file_sha256(path))
    else:
        loaded = _load_pickle_file(path, arch, num_classes, trust_model, code_module)
    set_training(loaded.module, False)
    return loaded


def _sniff_format(path: Path) -> str:
    """Tell TorchScript and torch.export archives from torch.save files by their zip entries."""
    if not zipfile.is_zipfile(path):
        return "torch.save"
    try:
        names = zipfile.ZipFile(path).namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelLoadError(f"model file {str(path)!r} is a damaged zip archive ({e})") from e
    if any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in names):
        return "export"
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    if not any(n.endswith("/data.pkl") for n in names):  # torch.load's "[enforce fail at ...]"
        if {"x_train", "y_train"} <= {Path(n).stem for n in names}:  # an .npz of data
            raise _data_file(path)
        held = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise ModelLoadError(
            f"model file {str(path)!r} is a zip archive that PyTorch did not write (it holds "
            f"{held or 'nothing'}): pass a model saved with torch.save (a state_dict or a "
            "module), torch.jit.save or torch.export.save"
        )
    return "torch.save"


def _load_program(path: Path, trust_model: bool) -> nn.Module:
    """A torch.export program, read from one copy of the file's bytes: the bytes checked are
    the bytes loaded."""
    data = path.read_bytes()
    if not trust_model:
        hazards = _read(path, lambda: program_hazards(data))
        if hazards:
            raise trust_needed(str(path), f"is a torch.export archive with {hazards[0]}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.export.load(io.BytesIO(data)).module()
        # Every trial trains a deep copy, which leaves out the hooks .module() adds (its guards
        # stay in the graph); the source is one too, or a latency ratio would count the hooks'
        # time against the source only (0.5x for an unchanged small model).
        return copy.deepcopy(module)
    except Exception as e:  # a damaged archive fails anywhere in torch's deserializer
        raise _unreadable(path, e) from e


def _read(path: Path, reader: Any) -> Any:
    try:
        return reader()
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise _unreadable(path, e) from e


def _unreadable(path: Path, e: Exception) -> ModelLoadError:
    reason = unreadable_file(e)
    return ModelLoadError(
        f"cannot read model file {str(path)!r}: {reason}. Write it with torch.save, "
        "torch.jit.save or torch.export.save"
    )


def _load_pickle_file(
    path: Path,
    arch: str | None,
    num_classes: int | None,
    trust_model: bool,
    code_module: types.ModuleType | None,
) -> LoadedModel:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # A pickled class or function shows up as a global the safe reader refuses; anything
        # else is a damaged file.
        found = _refused_global(e)
        if found is None:
            raise _unreadable(path, e) from e
        if not trust_model:
            raise trust_needed(str(path), f"holds a pickled Python object ({found})") from e
        obj = _read_trusted(path, code_module)
        if isinstance(obj, nn.Module):
            refuse_with_own_network(str(path), "pickle", arch, num_classes)
            return LoadedModel(obj, str(path), "pickle", file_sha256(path))
        # Else a training checkpoint, mostly: the weights beside objects the safe reader
        # refuses (an argparse Namespace, a scheduler), read as any state_dict is.
    except Exception as e:
        # The safe reader runs no code from the file, so whatever else it raises is the file's
        # fault: a text or CSV file fails as a KeyError or IndexError of its unpickler.
        raise _unreadable(path, e) from e
    if isinstance(obj, Mapping) and {"x_train", "y_train"} <= set(obj):
        raise _data_file(path)
    state = _find_state_dict(obj)
    if state is None:
        name = type(obj).__name__
        raise ModelLoadError(
            f"{str(path)!r} holds {'an' if name[0] in 'AEIOUaeiou' else 'a'} {name} that is "
            "neither a state_dict nor a module: save model.state_dict() or the module itself"
        )
    if not state:  # torch.save({}), or the state_dict of a network with no weights
        raise ModelLoadError(
            f"model file {str(path)!r} holds no weights (an empty {type(state).__name__}): "
            "save model.state_dict() of the trained network, or the module itself"
        )
    if arch is None:
        raise ModelLoadError(
            f"{str(path)!r} holds only weights (a state_dict): pass --arch torchvision:NAME or "
            "--arch package.module:ClassName so autotune can build the network they belong to"
        )
    module = build_arch(arch, num_classes)
    built = f"--arch {arch!r}" + (f" with --num-classes {num_classes}" if num_classes else "")
    missing, unexpected = _compare_keys(module.state_dict(), state)
    if missing or unexpected:
        raise ModelLoadError(
            f"the weights in {str(path)!r} do not fit {built}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}; check --arch and --num-classes"
        )
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        lines = str(e).strip().splitlines()
        detail = (lines[1] if len(lines) > 1 else lines[0]).strip().rstrip(".")
        raise ModelLoadError(
            f"the weights in {str(path)!r} do not fit {built}: {detail}; "
            "check --arch and --num-classes"
        ) from e
    return LoadedModel(module, str(path), "state_dict", file_sha256(path), arch)


def _data_file(path: Path) -> ModelLoadError:
    """A tensors file of data given as the model: it read as a state_dict (tensors by name)."""
    return ModelLoadError(
        f"model file {str(path)!r} looks like a data file (it holds x_train and y_train), not a "
        "model: pass it as --data, and the model as --model"
    )


# torch's two wordings: "Unsupported global: GLOBAL m.C was not an allowed global by default"
# and "Trying to load unsupported GLOBAL m.f whose module m is blocked".
_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", re.IGNORECASE)


def _refused_global(e: Exception) -> str | None:
    """The global (``module.name``) that torch's safe reader refused to load, if that was why."""
    match = _GLOBAL.search(str(e))
    return match.group(1) if match else None


def _read_trusted(path: Path, code_module: types.ModuleType | None) -> Any:
    try:
        return torch.load(
            path, map_location="cpu", weights_only=False, pickle_module=_pickle_with(code_module)
        )
    except (AttributeError, ModuleNotFoundError) as e:
        raise ModelLoadError(
            f"the class pickled in {str(path)!r} cannot be found ({e}): pass --code "
            "path/to/file.py that defines it, or put its module on PYTHONPATH"
        ) from e


def _pickle_with(code_module: types.ModuleType | None) -> types.ModuleType:
    """A pickle module whose unpickler also looks up classes in the user's ``--code`` file.

    Models pickled from a script refer to ``__main__.ClassName``; that name only resolves in
    the process that saved them, so we fall back to the file the user points at.
    """

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            try:
                return super().find_class(module, name)
            except (AttributeError, ModuleNotFoundError):
                if code_module is not None and hasattr(code_module, name):
                    return getattr(code_module, name)
                raise

    shim = types.ModuleType("autotune_pickle")
    shim.__dict__.update({k: getattr(pickle, k) for k in ("load", "loads", "dump", "dumps")})
    shim.Unpickler = Unpickler  # type: ignore[attr-defined]
    return shim


def _find_state_dict(obj: Any) -> Mapping[str, torch.Tensor] | None:
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return obj
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj:
                return _find_state_dict(obj[key])
    return None


def _compare_keys(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
