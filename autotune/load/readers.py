"""Readers for each kind of data spec: tensors files, CSV, scikit-learn sets (image folders are
read by ``images``).

Each returns a ``TaskData`` split into train/val(/test); ``data.load_data`` picks the reader and
validates what it returns.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autotune.errors import DataError, unreadable_file
from autotune.load.tasks import SKLEARN_SETS, TaskData, as_labels, carve, check_pair


def read_tensors_file(path: Path) -> dict[str, Any]:
    if path.suffix == ".npz" and path.is_file() and not zipfile.is_zipfile(path):
        # np.load reads any other file as a pickle or .npy: its refusal of a text file advises
        # allow_pickle, which would run what a pickle holds.
        raise DataError(
            f"cannot read tensors file {str(path)!r} (it is not a .npz archive, or it is "
            "damaged): save the arrays with numpy.savez, or a dict of tensors with torch.save"
        )
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        with warnings.catch_warnings():  # torch's note that it checks a sparse tensor: not news
            warnings.filterwarnings("ignore", "Validating sparse tensor invariants")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(
            f"cannot read tensors file {str(path)!r} ({unreadable_file(e)}): "
            "save a dict of tensors with torch.save or numpy.savez"
        ) from e
    if not isinstance(obj, dict):
        raise DataError(
            f"tensors file {str(path)!r} holds a {type(obj).__name__}; it must hold a dict with "
            "x_train, y_train (and optionally x_val, y_val, x_test, y_test)"
        )
    return obj


def load_sklearn(spec: str, val_fraction: float, seed: int) -> TaskData:
    import sklearn.datasets as sk

    name = spec.split(":", 1)[1]
    if name not in SKLEARN_SETS:
        raise DataError(f"unknown data set {spec!r}: use sklearn:{{{'|'.join(SKLEARN_SETS)}}}")
    bunch = getattr(sk, f"load_{name}")()
    y = torch.tensor(bunch.target, dtype=torch.int64)
    if name == "digits":
        x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
        preprocessing: dict[str, Any] = {"input": "1x8x8 images, pixel values / 16"}
        features = None
    else:
        raw = torch.tensor(bunch.data, dtype=torch.float32)
        mean, std = raw.mean(0), raw.std(0)
        x = (raw - mean) / std
        preprocessing = {
            "input": "features standardised with the whole set's mean and std",
            "mean": mean.tolist(),
            "std": std.tolist(),
        }
        features = [str(f) for f in bunch.feature_names]
    # A fixed test split, then validation from the rest, both by seed.
    x_rest, y_rest, x_test, y_test = carve(x, y, 0.2, seed, spec)
    x_train, y_train, x_val, y_val = carve(x_rest, y_rest, val_fraction, seed, spec)
    classes = [str(c) for c in bunch.target_names]
    return TaskData(
        x_train, y_train, x_val, y_val, x_test, y_test, spec, classes, features, preprocessing
    )


def load_csv(path: Path, target: str | None, val_fraction: float, seed: int) -> TaskData:
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except Exception as e:
        raise DataError(f"cannot read CSV file {str(path)!r}: {e}") from e
    if frame.empty:  # its empty columns read as text, which the checks below would blame
        raise DataError(
            f"CSV file {str(path)!r} has no rows under its header: give it one sample a row"
        )
    if target is None:
        target = next((c for c in ("target", "label") if c in frame.columns), None)
        if target is None:
            raise DataError(
                f"CSV file {str(path)!r} has no 'target' or 'label' column; name the label "
                f"column with --target (columns: {list(frame.columns)[:10]})"
            )
    elif target not in frame.columns:
        raise DataError(
            f"CSV file {str(path)!r} has no column {target!r}; --target must be one of "
            f"{list(frame.columns)[:10]}"
        )
    if frame[target].isna().any():
        raise DataError(
            f"CSV file {str(path)!r}: column {target!r} has empty labels; fill or drop them"
        )
    features = frame.drop(columns=[target])
    if features.columns.empty:
        raise DataError(
            f"CSV file {str(path)!r} has no feature columns beside its label column {target!r}"
        )
    bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise DataError(
            f"CSV file {str(path)!r}: feature column {bad[0]!r} is not numeric; encode it as "
            "numbers first"
        )
    labels = frame[target]
    if pd.api.types.is_numeric_dtype(labels):
        y = as_labels("the target column", torch.tensor(labels.to_numpy()), str(path))
        classes = None
    else:
        classes = sorted(str(v) for v in labels.unique())
        index = {c: i for i, c in enumerate(classes)}
        y = torch.tensor([index[str(v)] for v in labels], dtype=torch.int64)
    x = torch.tensor(features.to_numpy(dtype=np.float32))
    check_pair(str(path), "train", x, y)
    x_train, y_train, x_val, y_val = carve(x, y, val_fraction, seed, str(path))
    return TaskData(
        x_train,
        y_train,
        x_val,
        y_val,
        None,
        None,
        str(path),
        classes,
        [str(c) for c in features.columns],
        {"input": f"CSV columns {list(features.columns)} as float32, label {target!r}"},
    )
