"""Shared by the benchmarks: print a Markdown section and append it to a results file."""

from __future__ import annotations

from pathlib import Path


def emit(lines: list[str], write: Path | None) -> None:
    text = "\n".join(lines).rstrip("\n") + "\n"
    print(text)
    if write is not None:
        with write.open("a") as f:
            f.write(text + "\n")
