"""The exported bundle's file list (``config.yaml``'s ``files``): for each file, how to load
it, or why it was not written. One spelling of "not written", so that the summary, the model
card and the ONNX export tell the two apart the same way."""

from __future__ import annotations

from typing import Any

NOT_WRITTEN = "not written"


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
