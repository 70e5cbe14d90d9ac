"""The exported bundle's file list (``config.yaml``'s ``files``): for each file, how to load
it, or why it was not written. One spelling of "not written", so that the summary, the model
card and the ONNX export tell the two apart the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from autotune.results.errors import GRID

NOT_WRITTEN = "not written"
# The files an export writes only where it can or is asked to: an earlier export's that the
# next one into the same folder does not write again are removed (config.yaml and README.md
# are written every time).
OPTIONAL = ("model.pt", "model.pt2", "model.onnx", GRID)


def not_written(why: str) -> str:
    """The entry of a file that could not be written, and ``why``."""
    return f"{NOT_WRITTEN}: {why}"


def is_written(how: str) -> bool:
    """Whether an entry of the file list is a written file's (how to load it)."""
    return not how.startswith(NOT_WRITTEN)


def written(files: dict[str, str]) -> list[str]:
    """The names of the files written, in the list's order."""
    return [name for name, how in files.items() if is_written(how)]


def bundle(config: dict[str, Any]) -> list[str]:
    """The files an export wrote in its folder, read off its ``config.yaml``: the model files
    written (sorted), the grid of fixed and broken samples when one was drawn (``errors.grid``,
    image data), then the config itself and the model card made from it."""
    grid = (config.get("errors") or {}).get("grid")
    return [
        *sorted(written(config["files"])),
        *([grid] if grid else []),
        "config.yaml",
        "README.md",
    ]


def earlier_bundle(folder: Path) -> list[str]:
    """The files an earlier export wrote in ``folder``, as its ``config.yaml`` lists them; none
    where the folder holds no bundle autotune can read, or a ``config.yaml`` of someone else's
    (then nothing there is autotune's)."""
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text())
        return bundle(config) if "autotune_version" in config else []
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return []


def remove_stale(folder: Path, earlier: list[str], config: dict[str, Any]) -> None:
    """Remove the files of an earlier export into ``folder`` (``earlier``) that this export
    (``config``) did not write: an old ``model.onnx`` left beside a new model was not made from
    it. Only autotune's own file names go: a file the user put there stays."""
    kept = set(bundle(config))
    for name in earlier:
        if name in OPTIONAL and name not in kept:
            (folder / name).unlink(missing_ok=True)
