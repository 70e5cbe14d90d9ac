"""Image folders: preprocessing as the model was trained (resize of the shorter side, centre crop,
mean/std normalisation), held as tensors when small, streamed from disk when large.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from autotune.errors import DataError
from autotune.load.streams import Streamed, resident_limit
from autotune.load.tasks import SPLITS, TaskData, carve

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
"""The mean and std torchvision's and timm's ImageNet-trained models were trained with."""
SAMPLED_FILES = 64
MAX_SIDE = 4096
"""The largest ``--image-size``: one decoded image of that side is 200 MB of float32, and a
larger one is a typo that would only end in the kernel killing the process for memory."""
"""Files whose contents enter a folder's fingerprint (every file's name and size do)."""


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes an input: RGB or grey, the shorter side resized to ``size``,
    the centre ``size`` x ``size`` cropped, scaled to [0, 1], then ``(x - mean) / std``."""

    size: int
    channels: int = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __call__(self, path: str) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms import functional as tf

        try:
            with Image.open(path) as file:
                image = file.convert("L" if self.channels == 1 else "RGB")
        except Exception as e:
            raise DataError(f"image {path!r} cannot be read ({e}); remove or replace it") from e
        image = tf.center_crop(tf.resize(image, self.size), [self.size, self.size])
        x = tf.to_tensor(image)
        if self.mean is not None and self.std is not None:
            x = tf.normalize(x, list(self.mean), list(self.std))
        return x

    def describe(self) -> dict[str, Any]:
        """The preprocessing as recorded in ``config.yaml``."""
        return {
            "input": f"{self.channels}x{self.size}x{self.size} images: shorter side resized to "
            f"{self.size}, centre crop, scaled to [0, 1]"
            + (", then (x - mean) / std per channel" if self.mean is not None else ""),
            "resize": self.size,
            "crop": self.size,
            "channels": self.channels,
            "normalize": None
            if self.mean is None
            else {"mean": list(self.mean), "std": list(self.std or ())},
        }


class FolderImages(Dataset):
    """``(input, label)`` pairs of an image folder's files, decoded as they are read."""

    def __init__(self, samples: list[tuple[str, int]], preprocess: Preprocess) -> None:
        self.samples = samples
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.preprocess(path), label


def parse_normalize(text: str | None, channels: int) -> tuple[tuple[float, ...], ...] | None:
    """``imagenet``, ``none`` or ``MEAN,STD`` (one of each for all channels, or one per channel:
    ``m1,m2,m3,s1,s2,s3``) as (mean, std) per channel; None for no normalisation."""
    if text is None or text == "none":
        return None
    if text == "imagenet":
        if channels != 3:
            raise DataError(
                f"--normalize imagenet is for 3-channel images, but the model takes {channels}: "
                "give MEAN,STD"
            )
        return IMAGENET
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 2:
        values = [values[0]] * channels + [values[1]] * channels
    if len(values) != 2 * channels or any(s <= 0 for s in values[channels:]):
        raise DataError(
            f"--normalize {text!r} is not imagenet, none or MEAN,STD (two numbers, or {channels} "
            f"means then {channels} positive stds)"
        )
    return tuple(values[:channels]), tuple(values[channels:])


def model_normalization(model: nn.Module | None) -> str | None:
    """The mean/std a model says it was trained with, as a ``--normalize`` value: timm models
    carry it in ``pretrained_cfg`` (or ``default_cfg``). None when the model does not say."""
    for name in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, name, None)
        if isinstance(cfg, dict) and cfg.get("mean") and cfg.get("std"):
            return ",".join(str(float(v)) for v in (*cfg["mean"], *cfg["std"]))
    return None


def load_image_folder(
    root: Path,
    image_size: int | None,
    channels: int | None,
    val_fraction: float,
    seed: int,
    normalize: str | None = None,
    workers: int | None = None,
) -> TaskData:
    """An ``ImageFolder`` tree, or ``train/``, ``val/``, ``test/`` trees side by side: held as
    tensors when the decoded inputs fit under ``streams.resident_limit()``, else streamed."""
    if image_size is not None and not 1 <= image_size <= MAX_SIDE:
        raise DataError(
            f"--image-size {image_size} is not a side in pixels: give one from 1 to {MAX_SIDE}, "
            "or leave it out to keep the first image's"
        )
    subsets = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if "train" not in subsets:
        subsets = {"train": root}
    listed = {split: _list(folder) for split, folder in subsets.items()}
    classes = listed["train"][1]
    for split, (_, names) in listed.items():
        if names != classes:
            raise DataError(
                f"image folder {str(root)!r}: {split}/ has classes {names} but train/ has "
                f"{classes}; they must be the same folders"
            )
    c = channels or 3
    first = listed["train"][0][0][0]
    size = image_size or _first_side(first)
    stats = parse_normalize(normalize, c)
    preprocess = Preprocess(size, c, *(stats or (None, None)))
    count = sum(len(samples) for samples, _ in listed.values())
    streamed = count * c * size * size * 4 > resident_limit()
    pairs: dict[str, tuple[Any, torch.Tensor]] = {}
    for split, (samples, _) in listed.items():
        labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        source = FolderImages(samples, preprocess)
        if streamed:
            inputs: Any = Streamed(source, range(len(samples)), (c, size, size), workers)
        else:
            inputs = torch.stack([source[i][0] for i in range(len(source))])
        pairs[split] = (inputs, labels)
    x_train, y_train = pairs["train"]
    if "val" in pairs:
        x_val, y_val = pairs["val"]
    else:
        x_train, y_train, x_val, y_val = _carve(x_train, y_train, val_fraction, seed, str(root))
    x_test, y_test = pairs.get("test", (None, None))
    preprocessing = {
        **preprocess.describe(),
        "storage": "streamed from disk" if streamed else "resident in memory",
    }
    data = TaskData(
        x_train, y_train, x_val, y_val, x_test, y_test, str(root), classes, None, preprocessing
    )
    files = [path for samples, _ in listed.values() for path, _ in samples]
    carving: dict[str, Any] = {} if "val" in pairs else {"val_fraction": val_fraction, "seed": seed}
    data.known_fingerprint = folder_fingerprint(root, files, {**preprocessing, **carving})
    return data


def _carve(
    x: Any, y: torch.Tensor, fraction: float, seed: int, spec: str
) -> tuple[Any, torch.Tensor, Any, torch.Tensor]:
    if not isinstance(x, Streamed):
        return carve(x, y, fraction, seed, spec)
    # The same split a resident folder gets: carve the positions, then take them.
    rest, y_rest, part, y_part = carve(torch.arange(len(x)), y, fraction, seed, spec)
    return x.subset(rest), y_rest, x.subset(part), y_part


def _list(folder: Path) -> tuple[list[tuple[str, int]], list[str]]:
    from torchvision import datasets

    try:
        found = datasets.ImageFolder(str(folder), loader=str)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(
            f"image folder {str(folder)!r} cannot be read ({e}); it needs one sub-folder of "
            "images per class"
        ) from e
    return list(found.samples), list(found.classes)


def _first_side(path: str) -> int:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return max(image.size)
    except Exception as e:
        raise DataError(f"image {path!r} cannot be read ({e}); remove or replace it") from e


def folder_fingerprint(root: Path, files: list[str], settings: dict[str, Any]) -> str:
    """A hash of every file's name and size, the contents of ``SAMPLED_FILES`` of them spread
    over the list, and the settings that turn them into inputs. Reads a few files, not all."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in files:
        digest.update(
            f"{Path(path).relative_to(root).as_posix()}\0{Path(path).stat().st_size}\n".encode()
        )
    step = max(1, len(files) // SAMPLED_FILES)
    for path in files[::step][:SAMPLED_FILES]:
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()
