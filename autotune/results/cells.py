"""How the leaderboard fits a width: compact numbers, which columns to keep, and text packed
into whole words. Pure string work; ``results.leaderboard`` says what the columns are."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from rich.cells import cell_len
from rich.table import Table

Board = TypeVar("Board")
Row = TypeVar("Row")

KEY_PARAMS = (
    "prune",
    "prune_width",
    "drop_features",
    "importance",
    "lr",
    "optimizer",
    "batch_size",
    "unfreeze",
    "unfreeze_order",
    "loss",
    "dropout",
    "weight_decay",
)
_SHORT = {
    "batch_size": "bs",
    "weight_decay": "wd",
    "optimizer": "opt",
    "unfreeze_order": "order",
    "drop_features": "drop",
    "prune_width": "width",
    "importance": "rank",
}


@dataclass(frozen=True)
class Column(Generic[Board, Row]):
    """One column of the table. Adding one to the leaderboard is one entry in its ``COLUMNS``."""

    header: str
    """Its title; ``{metric}`` and ``{reference}`` (`` vs trial N``: the trial the parameters
    are compared with, when there is one) are filled in."""
    priority: int
    """Lower is more important: a narrow screen drops the highest numbers first."""
    cell: Callable[[Board, Row], str]
    justify: Literal["left", "right"] = "right"
    min_width: int | None = None
    """Set for free text (words, never cut): it takes the width the others leave, at least this."""


PADDING = 3
"""Cells a column costs besides its content in rich's default box: a space either side and a
separator line."""


def fmt(value: Any) -> str:
    """A parameter or metric value, short: at most four significant decimals."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return (
            f"{value:.4g}"
            if abs(value) < 1e-2 or abs(value) >= 1e4
            else f"{value:.4f}".rstrip("0").rstrip(".")
        )
    return str(value)


def gain(value: float | None) -> str:
    return "" if value is None else f"{value:+.4f}"


def count(n: int) -> str:
    """A count in at most five characters: 999, 28.5k, 1.20M, 3.40G."""
    for unit, scale in (("G", 1e9), ("M", 1e6)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def share(value: int | None, original: int | None, template: str = "{} {}") -> str:
    """A count with its share of the source model's: ``28.5k 70%``."""
    if value is None:
        return ""
    return template.format(count(value), f"{value / original:.0%}") if original else count(value)


def latency(ratio: float | None, spread: float | None, ms: float | None, source: bool) -> str:
    """Latency against the source's, timed side by side, with its noise (``0.72x±0.05``);
    milliseconds for a study measured before ratios were."""
    if source:
        return "1x"
    if ratio is not None:
        return f"{ratio:.2f}x±{spread or 0.0:.2f}"
    return "" if ms is None else f"{ms:.2g}ms"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def keep_columns(widths: Sequence[int], priorities: Sequence[int], available: int) -> list[bool]:
    """Which columns to show in ``available`` cells: the most important (lowest priority) first,
    each at its full width (a column of free text counts at its minimum). Once one does not fit,
    it and every less important one are dropped, so that a narrower screen only ever loses the
    tail of the same order and no number is ever cut."""
    keep = [False] * len(widths)
    used = 1  # the table's left edge
    for i in sorted(range(len(widths)), key=lambda i: priorities[i]):
        if used + widths[i] + PADDING > available:
            break
        keep[i] = True
        used += widths[i] + PADDING
    return keep


def pack(text: str, width: int, lines: int) -> str:
    """``text``'s words in at most ``lines`` lines of ``width`` cells, never cutting a word; the
    words that do not fit are counted at the end (``+3``)."""
    words = text.split()
    out: list[str] = []
    i = 0
    while i < len(words) and len(out) < lines:
        line = words[i]
        i += 1
        while i < len(words) and cell_len(line) + 1 + cell_len(words[i]) <= width:
            line += " " + words[i]
            i += 1
        out.append(line)
    left = len(words) - i
    while left and out:
        # Make room for the count on the last line, dropping words from its end.
        mark = f"+{left}"
        last = out[-1].split()
        if cell_len(" ".join([*last, mark])) <= width:
            out[-1] = " ".join([*last, mark])
            break
        if len(last) == 1:
            out[-1] = f"+{left + 1}"
            break
        out[-1] = " ".join(last[:-1])
        left += 1
    return "\n".join(out)


def format_params(params: dict[str, Any]) -> str:
    shown = []
    for key in KEY_PARAMS:
        if key in params:
            shown.append(f"{_SHORT.get(key, key)}={fmt(params[key])}")
    shown += [f"{k}={fmt(v)}" for k, v in params.items() if k not in KEY_PARAMS]
    return " ".join(shown)


def fit_table(
    table: Table,
    columns: Sequence[Column[Board, Row]],
    board: Board,
    rows: Sequence[Row],
    styles: Sequence[str],
    fields: dict[str, str],
    width: int,
) -> Table:
    """``table`` with the ``columns`` that fit in ``width`` cells, one row per ``rows``; free
    text takes one line per row from 120 cells on, two below. A column empty in every row (no
    flips counted, no MACs for a program) is left out: it would only take room."""
    cells = [[c.cell(board, row) for c in columns] for row in rows]
    said = [not cells or any(r[i] for r in cells) for i in range(len(columns))]
    columns = [c for c, k in zip(columns, said, strict=True) if k]
    cells = [[text for text, k in zip(r, said, strict=True) if k] for r in cells]
    headers = [c.header.format(**fields) for c in columns]
    widths = [
        c.min_width if c.min_width else max([cell_len(h)] + [cell_len(r[i]) for r in cells])
        for i, (c, h) in enumerate(zip(columns, headers, strict=True))
    ]
    keep = keep_columns(widths, [c.priority for c in columns], width)
    used = 1 + sum(w + PADDING for w, k in zip(widths, keep, strict=True) if k)
    room = {i: widths[i] + width - used for i, c in enumerate(columns) if c.min_width and keep[i]}
    for i, column in enumerate(columns):
        if keep[i]:
            free = i in room
            table.add_column(
                headers[i],
                justify=column.justify,
                no_wrap=not free,
                # Free text is packed into whole words; a single word wider than the
                # column folds rather than hiding its end.
                overflow="fold" if free else "ellipsis",
            )
    lines = 1 if width >= 120 else 2
    for row_cells, style in zip(cells, styles, strict=True):
        values = [
            pack(text, room[i], lines) if i in room else text
            for i, text in enumerate(row_cells)
            if keep[i]
        ]
        table.add_row(*values, style=style)
    return table
