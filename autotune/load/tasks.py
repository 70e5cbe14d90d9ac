"""The user's data as validated tensors: ``TaskData``, built from arrays, mappings or Datasets.

Every split is checked before any training: shapes, dtypes, finite values, label ranges.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from autotune.errors import DataError, first_line
from autotune.load.streams import Streamed, resident_limit

IN_MEMORY = "<in memory>"
"""The ``spec`` of data, and the ``path`` of a model, passed from Python as objects: no
command can load them again."""

Inputs = torch.Tensor | Streamed
"""A split's inputs: a tensor (resident) or ``Streamed`` (read from disk batch by batch)."""

SKLEARN_SETS = ("digits", "breast_cancer", "wine")
SPLITS = ("train", "val", "test")


@dataclass
class TaskData:
    """The user's data, one (inputs, labels) pair per split. Labels are tensors; inputs are
    tensors too unless the data is too large to hold (see ``streams.Streamed``)."""

    x_train: Inputs
    y_train: torch.Tensor
    x_val: Inputs
    y_val: torch.Tensor
    x_test: Inputs | None = None
    y_test: torch.Tensor | None = None
    spec: str = IN_MEMORY
    """What the user passed as ``--data``: recorded in the exported config."""
    classes: list[str] | None = None
    """Class names, when the data names them (CSV, image folders, scikit-learn sets)."""
    feature_names: list[str] | None = None
    """Input column names for feature-vector data."""
    preprocessing: dict[str, Any] = field(default_factory=dict)
    """How raw inputs were turned into ``x``: the exported model documents it."""
    known_fingerprint: str | None = field(default=None, repr=False)
    """``fingerprint()``, once computed (or set by the reader, from the files)."""

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes is not None else None

    @property
    def streamed(self) -> bool:
        """Whether the inputs are read from disk batch by batch rather than held."""
        return isinstance(self.x_train, Streamed)

    def fingerprint(self) -> str:
        """What identifies the data, computed once: the cache, the study check and export read
        it. Readers of files set it from the files (see ``images.folder_fingerprint``); else it
        is a hash of every tensor (and of a spread sample of a streamed Dataset's inputs)."""
        if self.known_fingerprint is None:
            digest = hashlib.sha256()
            for split in SPLITS:
                for t in (getattr(self, f"x_{split}"), getattr(self, f"y_{split}")):
                    if isinstance(t, Streamed):
                        t = t[t.spread()]
                        digest.update(str(len(t)).encode())
                    if t is not None:
                        digest.update(t.cpu().contiguous().numpy().tobytes())
            self.known_fingerprint = digest.hexdigest()
        return self.known_fingerprint

    def to(self, device: torch.device | str) -> TaskData:
        """The same data with every tensor on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)

    def columns(self, keep: list[int]) -> TaskData:
        """The same data with only input columns ``keep`` (feature-vector data)."""
        index = torch.tensor(keep, device=self.x_train.device)
        sliced = {
            f"x_{split}": getattr(self, f"x_{split}").index_select(1, index)
            for split in SPLITS
            if getattr(self, f"x_{split}") is not None
        }
        names = [self.feature_names[i] for i in keep] if self.feature_names else None
        return dataclasses.replace(self, **sliced, feature_names=names, known_fingerprint=None)


def from_tensors(
    x: Any,
    y: Any,
    *,
    x_val: Any = None,
    y_val: Any = None,
    x_test: Any = None,
    y_test: Any = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    classes: list[str] | None = None,
) -> TaskData:
    """Validated ``TaskData`` from in-memory arrays or tensors (notebooks, tests)."""
    mapping = {"x_train": x, "y_train": y}
    for name, value in (("x_val", x_val), ("y_val", y_val), ("x_test", x_test), ("y_test", y_test)):
        if value is not None:
            mapping[name] = value
    data = from_mapping(mapping, IN_MEMORY, val_fraction, split_seed)
    data.classes = classes
    validate(data)
    return data


def from_datasets(
    train: torch.utils.data.Dataset,
    val: torch.utils.data.Dataset | None = None,
    test: torch.utils.data.Dataset | None = None,
    *,
    workers: int | None = None,
    **kwargs: Any,
) -> TaskData:
    """``TaskData`` from torch Datasets of ``(input, label)`` pairs: read once into memory when
    the inputs fit under ``streams.resident_limit()``, else streamed through a ``DataLoader``
    with ``workers`` processes (the labels are read in one pass)."""
    sets = [d for d in (train, val, test) if d is not None]
    try:
        first = torch.as_tensor(train[0][0], dtype=torch.float32)
        count = sum(len(d) for d in sets)  # type: ignore[arg-type, misc]
    except Exception as e:
        raise DataError(
            f"the training dataset must give (input tensor, integer label) pairs and have a "
            f"length: {first_line(e)}"
        ) from e
    if count * first.numel() * 4 > resident_limit():
        return _streamed_datasets(train, val, test, tuple(first.shape), workers, **kwargs)

    def stacked(dataset: torch.utils.data.Dataset, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            pairs = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
            xs = torch.stack([torch.as_tensor(p[0], dtype=torch.float32) for p in pairs])
            ys = torch.stack([torch.as_tensor(p[1]).reshape(()) for p in pairs])  # not int(): 1.5
        except Exception as e:
            raise DataError(
                f"the {name} dataset must give (input tensor, integer label) pairs of one shape "
                f"and have a length: {first_line(e)}"
            ) from e
        return xs, ys

    x, y = stacked(train, "training")
    x_val, y_val = stacked(val, "validation") if val is not None else (None, None)
    x_test, y_test = stacked(test, "test") if test is not None else (None, None)
    return from_tensors(x, y, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test, **kwargs)


def _streamed_datasets(
    train: torch.utils.data.Dataset,
    val: torch.utils.data.Dataset | None,
    test: torch.utils.data.Dataset | None,
    shape: tuple[int, ...],
    workers: int | None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    classes: list[str] | None = None,
) -> TaskData:
    def split(dataset: torch.utils.data.Dataset, name: str) -> tuple[Streamed, torch.Tensor]:
        x = Streamed(dataset, range(len(dataset)), shape, workers)  # type: ignore[arg-type]
        try:
            y = torch.stack([torch.as_tensor(dataset[i][1]).reshape(()) for i in range(len(x))])
        except Exception as e:
            raise DataError(
                f"the {name} dataset must give (input tensor, integer label) pairs: {first_line(e)}"
            ) from e
        return x, as_labels(f"y_{name}", y, IN_MEMORY)

    x, y = split(train, "train")
    if val is not None:
        x_val, y_val = split(val, "val")
    else:
        rest, y, part, y_val = carve(torch.arange(len(x)), y, val_fraction, split_seed)
        x, x_val = x.subset(rest), x.subset(part)
    x_test, y_test = split(test, "test") if test is not None else (None, None)
    data = TaskData(x, y, x_val, y_val, x_test, y_test, classes=classes)
    validate(data)
    return data


def from_mapping(m: dict[str, Any], spec: str, val_fraction: float, seed: int) -> TaskData:
    missing = [k for k in ("x_train", "y_train") if k not in m]
    if missing:
        keys = sorted(map(str, m))  # a file's keys may be of any type: 1 < 'a' cannot be sorted
        raise DataError(
            f"data {spec!r} lacks {missing}; it has {keys}. A tensors file must hold "
            "x_train, y_train and optionally x_val, y_val, x_test, y_test"
        )
    known = [f"{xy}_{split}" for split in SPLITS for xy in "xy"]
    for key in m:
        # A misspelt split would be dropped without a word: x_vall's samples never validate.
        if str(key).lower()[:2] in ("x_", "y_") and key not in known:
            near = difflib.get_close_matches(str(key).lower(), known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise DataError(
                f"data {spec!r} has {key!r}, which is not a split autotune reads{hint}: name "
                "them x_train, y_train, x_val, y_val, x_test, y_test"
            )
    for split in ("val", "test"):
        has_x, has_y = f"x_{split}" in m, f"y_{split}" in m
        if has_x != has_y:
            raise DataError(
                f"data {spec!r} has {'x' if has_x else 'y'}_{split} without "
                f"{'y' if has_x else 'x'}_{split}: give both or neither"
            )
    t = {k: _as_tensor(k, v, spec) for k, v in m.items() if str(k)[:2] in ("x_", "y_")}
    for split in SPLITS:
        check_pair(spec, split, t.get(f"x_{split}"), t.get(f"y_{split}"))
    x_train, y_train = t["x_train"], t["y_train"]
    if "x_val" in t:
        x_val, y_val = t["x_val"], t["y_val"]
    else:
        x_train, y_train, x_val, y_val = carve(x_train, y_train, val_fraction, seed, spec)
    return TaskData(x_train, y_train, x_val, y_val, t.get("x_test"), t.get("y_test"), spec)


def _as_tensor(name: str, value: Any, spec: str) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(
            np.asarray(value) if not isinstance(value, torch.Tensor) else value
        )
    except (TypeError, ValueError) as e:
        raise DataError(f"data {spec!r}: {name} is not numeric ({e})") from e
    if tensor.layout != torch.strided:  # sparse: the checks, batching and training need dense
        tensor = tensor.to_dense()
    if name.startswith("x_"):
        if tensor.is_complex() or tensor.dtype == torch.bool:  # int8, int16, uint16: numbers
            raise DataError(
                f"data {spec!r}: {name} has dtype {tensor.dtype}; inputs must be real numbers"
            )
        return tensor.float()
    return as_labels(name, tensor, spec)


def as_labels(name: str, y: torch.Tensor, spec: str) -> torch.Tensor:
    if y.ndim != 1:
        raise DataError(
            f"data {spec!r}: {name} has shape {tuple(y.shape)}; labels must be one class index "
            "per sample (1-D), not one-hot"
        )
    if y.is_floating_point():
        if not torch.isfinite(y).all():
            raise DataError(f"data {spec!r}: {name} holds NaN or inf labels; remove those samples")
        if not torch.equal(y, y.round()):
            bad = y[y != y.round()][0].item()
            raise DataError(
                f"data {spec!r}: {name} holds non-integer labels (e.g. {bad!r}); labels must be "
                "class indices 0..C-1"
            )
    elif y.dtype == torch.bool:
        raise DataError(f"data {spec!r}: {name} has dtype {y.dtype}; labels must be integers")
    y = y.long()
    if len(y) and y.min() < 0:
        raise DataError(
            f"data {spec!r}: {name} holds the negative label {y.min().item()}; labels must be "
            "class indices 0..C-1"
        )
    return y


def check_pair(spec: str, split: str, x: Inputs | None, y: torch.Tensor | None) -> None:
    if x is None or y is None:
        return
    if len(x) != len(y):
        raise DataError(
            f"data {spec!r}: x_{split} has {len(x)} samples but y_{split} has {len(y)}; "
            "they must match"
        )
    if len(x) == 0:
        raise DataError(f"data {spec!r}: the {split} split is empty; give it samples")
    positions = None
    if isinstance(x, Streamed):
        # Read batch by batch later: a spread sample is checked now, so that a NaN is named
        # here rather than showing as a failed trial's loss.
        positions = x.spread()
        x = x[positions]
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).flatten(1).any(1).nonzero()[0].item())
        bad = bad if positions is None else positions[bad]
        raise DataError(
            f"data {spec!r}: x_{split} holds NaN or inf values (first in sample {bad}); "
            "clean or impute them first"
        )


def carve(
    x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int, spec: str = IN_MEMORY
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split off ``fraction`` of the samples by ``seed``: (x_rest, y_rest, x_part, y_part)."""
    n_part = round(len(x) * fraction)
    if n_part < 1 or n_part >= len(x):
        raise DataError(
            f"data {spec!r}: a {fraction:g} split of {len(x)} samples leaves "
            f"{len(x) - n_part} to train on and {n_part} to validate; give a --val-fraction "
            "that leaves some of each, more samples, or an explicit validation split"
        )
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    part, rest = order[:n_part], order[n_part:]
    return x[rest], y[rest], x[part], y[part]


def validate(data: TaskData) -> None:
    """Check that the splits agree with each other: shapes, values, label ranges."""
    for split in SPLITS:
        check_pair(data.spec, split, getattr(data, f"x_{split}"), getattr(data, f"y_{split}"))
    for split in ("val", "test"):
        x = getattr(data, f"x_{split}")
        if x is not None and x.shape[1:] != data.x_train.shape[1:]:
            raise DataError(
                f"data {data.spec!r}: x_{split} samples have shape {tuple(x.shape[1:])} but "
                f"x_train samples have {tuple(data.x_train.shape[1:])}; they must match"
            )
    if data.num_classes is not None:
        for split in SPLITS:
            y = getattr(data, f"y_{split}")
            if y is not None and y.max() >= data.num_classes:
                raise DataError(
                    f"data {data.spec!r}: y_{split} holds label {y.max().item()} but there are "
                    f"{data.num_classes} classes {data.classes}; labels must be "
                    f"0..{data.num_classes - 1}"
                )
