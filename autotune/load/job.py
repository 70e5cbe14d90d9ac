"""What a search runs on: the model and data specs, loaded and checked against each other.

The specs are stored with the study, so ``autotune export`` and a second worker rebuild the
same job from the storage alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autotune.errors import DataError, ModelLoadError
from autotune.load.anatomy import copy_model, set_training
from autotune.load.architecture import OWN_NETWORK
from autotune.load.attention import split_attention
from autotune.load.data import check_model_fits, check_val_fraction, load_data
from autotune.load.images import model_normalization
from autotune.load.models import LoadedModel, file_sha256, load_model
from autotune.load.tasks import IN_MEMORY, TaskData


@dataclass(frozen=True)
class ModelSpec:
    """How to load the model: the CLI's ``--model``, ``--arch``, ``--num-classes``, ..."""

    path: str
    arch: str | None = None
    num_classes: int | None = None
    trust_model: bool = False
    code: str | None = None

    def load(self, expected_sha256: str | None = None) -> LoadedModel:
        if expected_sha256 is not None and self.path != "demo" and Path(self.path).is_file():
            found = file_sha256(self.path)
            if found != expected_sha256:
                raise ModelLoadError(
                    f"model file {self.path!r} changed since the study started (sha256 "
                    f"{found[:12]}, study has {expected_sha256[:12]}): restore it, or start a "
                    "new study with another --study-name"
                )
        return load_model(
            self.path,
            arch=self.arch,
            num_classes=self.num_classes,
            trust_model=self.trust_model,
            code=self.code,
        )


@dataclass(frozen=True)
class DataSpec:
    """How to load the data: the CLI's ``--data``, ``--target``, ``--val-fraction``, ..."""

    spec: str
    target: str | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    image_size: int | None = None
    channels: int | None = None
    normalize: str | None = None
    """``imagenet``, ``none`` or ``MEAN,STD`` for image folders; None: what the model says it
    was trained with (``images.model_normalization``), else none."""
    workers: int | None = None
    """Loader worker processes when the data streams (default: up to 4)."""

    def __post_init__(self) -> None:
        check_val_fraction(self.val_fraction)  # before the model loads

    def load(self, model: nn.Module | None = None) -> TaskData:
        channels = self.channels
        if channels is None and model is not None:
            channels = input_channels(model)
        normalize = self.normalize
        if normalize is None and Path(self.spec).is_dir():
            normalize = model_normalization(model)
        return load_data(
            self.spec,
            target=self.target,
            val_fraction=self.val_fraction,
            split_seed=self.split_seed,
            image_size=self.image_size,
            channels=channels,
            normalize=normalize,
            workers=self.workers,
        )


def input_channels(model: nn.Module) -> int | None:
    """In-channels of the first Conv2d, so image folders load with the channels the model takes."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else None


@dataclass
class Job:
    """A loaded model and data, checked to fit each other."""

    model: LoadedModel
    data: TaskData
    num_classes: int
    model_spec: ModelSpec | None = None
    """None when the model was passed in memory."""
    data_spec: DataSpec | None = None
    """None when the data was passed in memory."""
    sites: list[Any] | None = field(default=None, init=False, repr=False, compare=False)
    """The model's gate sites, once traced (``search.prepare.job_sites``): kept with the job,
    so that the search's set-up traces them once."""

    @classmethod
    def load(
        cls,
        model_spec: ModelSpec,
        data_spec: DataSpec,
        expected_sha256: str | None = None,
        expected_fingerprint: str | None = None,
    ) -> Job:
        """Load both specs; with ``expected_*`` (a study's record), refuse a model file or
        data that changed since: the search's trials were scored on what it hashed."""
        model = model_spec.load(expected_sha256)
        data = data_spec.load(model.module)
        if expected_fingerprint is not None and data.fingerprint() != expected_fingerprint:
            raise DataError(
                f"data {data_spec.spec!r} changed since the search (fingerprint "
                f"{data.fingerprint()[:12]}, study has {expected_fingerprint[:12]}): pass the "
                "data the search used (restore it), or search this data anew with another "
                "--out or --study-name"
            )
        return cls.from_objects(model, data, model_spec, data_spec)

    @classmethod
    def from_objects(
        cls,
        model: nn.Module | torch.export.ExportedProgram | LoadedModel,
        data: TaskData,
        model_spec: ModelSpec | None = None,
        data_spec: DataSpec | None = None,
    ) -> Job:
        if not isinstance(model, LoadedModel):
            model = in_memory(model)
        num_classes = check_model_fits(model.module, data)
        # Same outputs, and heads that can be scored and removed (``load.attention``).
        split_attention(model.module, data.x_train[:2])
        return cls(model, data, num_classes, model_spec, data_spec)

    def describe(self) -> dict[str, Any]:
        """JSON-ready record of the job, stored with the study and in exported configs."""
        return {
            "model": {
                **(
                    dataclasses.asdict(self.model_spec)
                    if self.model_spec
                    else {"path": self.model.path}
                ),
                "format": self.model.format,
                "sha256": self.model.sha256,
            },
            "data": {
                **(
                    dataclasses.asdict(self.data_spec)
                    if self.data_spec
                    else {"spec": self.data.spec}
                ),
                "fingerprint": self.data.fingerprint(),
                "preprocessing": self.data.preprocessing,
                "classes": self.data.classes,
                "feature_names": self.data.feature_names,
            },
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_record(
        cls, record: dict[str, Any], *, trust_model: bool = False, code: str | None = None
    ) -> Job:
        """Rebuild the job a study was run on, from ``describe()``'s record.

        Trust is the caller's choice, never the record's: a study folder or storage may come
        from someone else, so the ``trust_model`` and ``code`` it stores are not honoured, and
        a model that needed them is refused in one line until the caller passes them again."""
        model_fields = {f.name for f in dataclasses.fields(ModelSpec)}
        data_fields = {f.name for f in dataclasses.fields(DataSpec)}
        model = record["model"]
        if model.get("path") == "demo" or model.get("format") in OWN_NETWORK:
            # An --arch or --num-classes the model never used, stored before ``demo_model`` and
            # ``load_model`` refused them: export goes on without them.
            model = {**model, "arch": None, "num_classes": None}
        if passed_in_memory(record):
            raise ModelLoadError(
                "this study's model or data was passed in memory from Python, so it cannot be "
                "reloaded from the storage: export it from Python with SearchResult.export()"
            )
        named = _code_named(model)
        if named and not trust_model and code is None:
            raise ModelLoadError(
                f"this study's model is built by code it names ({named}), and importing it runs "
                "that code: pass --code FILE (or --trust-model for all the study names) only if "
                "you trust it"
            )
        fields = {k: v for k, v in model.items() if k in model_fields}
        stored = fields.get("code")
        fields.update(trust_model=trust_model, code=code or (stored if trust_model else None))
        model_spec = ModelSpec(**fields)
        data_spec = DataSpec(**{k: v for k, v in record["data"].items() if k in data_fields})
        _check_recorded_paths(model_spec, data_spec)
        sha256 = model.get("sha256") if model_spec.path != "demo" else None
        return cls.load(model_spec, data_spec, sha256, record["data"].get("fingerprint"))


def _check_recorded_paths(model_spec: ModelSpec, data_spec: DataSpec) -> None:
    """Refuse a model or data path the study recorded that is not there: a relative one is
    relative to the folder the search ran in, which the study does not record, and the
    loaders' own messages would ask for an option ``export`` does not have."""
    paths = [("model file", model_spec.path, ModelLoadError), ("data", data_spec.spec, DataError)]
    for what, path, error in paths:
        if path == "demo" or path.startswith("sklearn:") or Path(path).exists():
            continue
        if Path(path).is_absolute():
            raise error(
                f"{what} {path!r}, as the search recorded it, does not exist: put it back at "
                "that path to export this study"
            )
        raise error(
            f"{what} {path!r}, as the search recorded it (relative to the folder the search ran "
            f"in), is not in {str(Path.cwd())!r}: run autotune export from the folder the search "
            "ran in"
        )


def _code_named(model: dict[str, Any]) -> str | None:
    """The Python a stored model spec would import: its ``--code`` file, or an ``--arch``
    outside torchvision (a file or a module, whose import runs it)."""
    if model.get("code"):
        return f"--code {model['code']!r}"
    if arch_module(model) is not None:
        return f"--arch {model['arch']!r}"
    return None


def arch_module(model: dict[str, Any]) -> str | None:
    """The file or module a stored ``--arch`` outside torchvision names (``net.py`` of
    ``net.py:Net``), whose import runs it; None for torchvision's or no ``--arch``."""
    arch = model.get("arch")
    if not isinstance(arch, str) or ":" not in arch:
        return None
    module = arch.rsplit(":", 1)[0]
    return None if module == "torchvision" else module


def in_memory(model: nn.Module | torch.export.ExportedProgram) -> LoadedModel:
    """A model passed from Python, held as one read from a file is: a TorchScript or
    torch.export program as a program (no analysis or pruning: hooks would fail on it), else a
    module. A copy: the search moves its source to the device and sets its mode, and the
    caller's model (in a notebook, say) must come out of a search as it went in."""
    module: nn.Module
    if isinstance(model, torch.export.ExportedProgram):
        module, kind = model.module(), "export"  # the copy leaves out the hooks it adds
    else:
        module = model
        kind = "torchscript" if isinstance(model, torch.jit.ScriptModule) else "module"
    copied = copy_model(module)
    set_training(copied, False)
    return LoadedModel(copied, IN_MEMORY, kind, module_sha256(module))


def module_sha256(model: nn.Module) -> str:
    """Hash of a module's weights, for models that come from memory rather than a file."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def passed_in_memory(record: dict[str, Any]) -> bool:
    """Whether a study's model or data was passed from Python as objects (``IN_MEMORY``)."""
    return IN_MEMORY in (record["model"].get("path"), record["data"].get("spec"))
