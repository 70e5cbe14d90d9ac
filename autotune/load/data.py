"""Data specs -> validated ``TaskData``, split into train/val(/test), and checked against the model.

Specs: a tensors file (``.pt``/``.npz`` with ``x_train, y_train`` and optionally ``x_val, y_val,
x_test, y_test``), a CSV file with a target column, an image folder (torchvision ``ImageFolder``),
``sklearn:digits|breast_cancer|wine``, and ``demo``. Everything is checked before any training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from autotune.errors import DataError, ModelLoadError, first_line
from autotune.load.anatomy import device_of
from autotune.load.demo import demo_files
from autotune.load.images import load_image_folder
from autotune.load.readers import load_csv, load_sklearn, read_tensors_file
from autotune.load.tasks import SKLEARN_SETS, SPLITS, TaskData, from_mapping, validate


def check_val_fraction(value: float) -> None:
    """Refuse a ``--val-fraction`` no split can be carved with, before anything loads."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise DataError(
            f"--val-fraction must be between 0 and 1 (the share of the training data held out "
            f"for validation), got {value!r}: use a fraction such as 0.2"
        )


def load_data(
    spec: str,
    *,
    target: str | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    image_size: int | None = None,
    channels: int | None = None,
    normalize: str | None = None,
    workers: int | None = None,
) -> TaskData:
    """Read and validate the data named by ``spec``.

    Args:
        spec: A file or folder path, ``sklearn:NAME`` or ``demo``.
        target: The label column of a CSV file (default: ``target``, else ``label``).
        val_fraction: Share of the training data carved out as validation when none is given.
        split_seed: Seed of that carving; fixed by default so that studies with other search
            seeds still compare on the same validation data.
        image_size: Side that images of an image folder are resized to (default: the first
            image's size).
        channels: 1 or 3 channels for an image folder (default 3).
        normalize: Mean/std normalisation of an image folder: ``imagenet``, ``none`` (the
            default) or ``MEAN,STD`` (see ``images.parse_normalize``).
        workers: Loader worker processes when the data streams (default: up to 4).
    """
    check_val_fraction(val_fraction)
    # An option for another kind of data would be ignored without a word.
    folder = Path(spec).is_dir()
    for flag, value, applies, kind, fix in (
        ("--image-size", image_size, folder, "image folders", "drop it"),
        ("--target", target, spec.endswith(".csv"), "CSV files", "drop it"),
        (
            "--normalize",
            None if normalize == "none" else normalize,
            folder,
            "image folders",
            "it is used as given (normalise the tensors before saving them)",
        ),
    ):
        if value is not None and not applies:
            raise DataError(f"{flag} {value} applies to {kind}; data {spec!r} is not one: {fix}")
    if workers is not None and workers < 0:
        raise DataError(f"--loader-workers must be 0 or more, got {workers}")
    if spec == "demo":
        data = from_mapping(read_tensors_file(demo_files().data), spec, val_fraction, split_seed)
        data.preprocessing = {"input": "1x8x8 digits in [0, 1], rotated 30-60 degrees and blurred"}
    elif spec.startswith("sklearn:"):
        data = load_sklearn(spec, val_fraction, split_seed)
    else:
        path = Path(spec)
        if not path.exists():
            raise DataError(
                f"data {spec!r} does not exist: pass a .pt/.npz/.csv file, an image folder, "
                f"sklearn:{{{'|'.join(SKLEARN_SETS)}}} or demo"
            )
        if path.is_dir():
            data = load_image_folder(
                path, image_size, channels, val_fraction, split_seed, normalize, workers
            )
        elif path.suffix in (".pt", ".pth", ".npz"):
            data = from_mapping(read_tensors_file(path), spec, val_fraction, split_seed)
        elif path.suffix == ".csv":
            data = load_csv(path, target, val_fraction, split_seed)
        else:
            raise DataError(
                f"data file {spec!r} has an unknown format {path.suffix!r}: use .pt, .npz, .csv "
                "or an image folder"
            )
    data.spec = spec
    validate(data)
    return data


def check_model_fits(model: nn.Module, data: TaskData) -> int:
    """Run one dry forward pass and check the model's output against the labels.

    Returns:
        The model's output width (its number of classes).
    """
    if next(model.parameters(), None) is None:  # else every trial fails on its unfreezing
        raise ModelLoadError(
            "the model has no parameters, so there is nothing to fine-tune or prune: give the "
            "trained model whose weights are parameters (nn.Parameter, not buffers)"
        )
    try:
        with torch.no_grad():
            # Two batch sizes: a torch.export program traced with a fixed one fails here, not
            # in the middle of the search (batches of 32 for the latency, of any size to train).
            model(data.x_train[:3].to(device_of(model)))
            out = model(data.x_train[:2].to(device_of(model)))
    except Exception as e:
        reason = first_line(e)
        fix = "Give inputs of the shape the model was trained on"
        if "Guard failed" in reason and ".size()[0]" in reason:  # the batch, not a feature
            fix = (
                "The torch.export program was traced with a fixed batch size: export it with a "
                "dynamic batch dimension (dynamic_shapes={0: torch.export.Dim.AUTO} on the input)"
            )
        raise DataError(
            f"the model cannot take inputs of shape {tuple(data.x_train.shape[1:])} from data "
            f"{data.spec!r}: {reason}. {fix}"
        ) from e
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DataError(
            f"the model returns {shape} for a batch of 2 inputs of shape "
            f"{tuple(data.x_train.shape[1:])} from data {data.spec!r}; autotune tunes "
            "classifiers that return one row of class scores per sample (N, C): check that "
            "the data is what the model takes"
        )
    if out.isnan().any() or out.isposinf().any():
        # The data is finite (checked when read), so the model is at fault: NaN or inf weights
        # of a damaged file. Every trial would fail on its loss, told to lower its lr. (-inf is
        # a log-probability of 0, which a model ending in log(softmax) may return.)
        raise ModelLoadError(
            f"the model returns NaN or inf class scores for finite inputs from data "
            f"{data.spec!r}: its weights may hold NaN or inf; check the model file"
        )
    width = out.shape[1]
    present = data.y_train.unique()
    if len(present) < 2:
        # One class leaves nothing to tell apart: every trial would score 1.0 and be "best".
        label = int(present[0]) if len(present) else None
        named = data.classes[label] if data.classes and label is not None else label
        raise DataError(
            f"data {data.spec!r}: every training label is class {named!r}; a classifier needs "
            "samples of at least two classes: add the other classes' samples"
        )
    if width < 2:
        raise DataError(
            f"the model outputs {width} class score per sample; autotune tunes classifiers "
            "with one score per class, at least two: build the model for the data's classes"
        )
    if data.num_classes is not None and data.num_classes != width:
        raise DataError(
            f"the model outputs {width} class scores but data {data.spec!r} has "
            f"{data.num_classes} classes {data.classes}; build the model for {data.num_classes} "
            "classes (e.g. --num-classes with --arch)"
        )
    for split in SPLITS:
        y = getattr(data, f"y_{split}")
        if y is not None and y.max() >= width:
            raise DataError(
                f"data {data.spec!r}: y_{split} holds label {y.max().item()} but the model outputs "
                f"only {width} class scores; labels must be 0..{width - 1}"
            )
    return int(width)
