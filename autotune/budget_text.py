"""The grammar of the budgets given on the command line: ``--max-params``, ``--max-macs``,
``--max-flips`` (a share or a count) and ``--max-latency`` (a ratio or milliseconds)."""

from __future__ import annotations

import re

from autotune.errors import AutotuneError

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def budget_parts(text: str | float | int, what: str) -> tuple[float, str]:
    """A ``--max-params`` / ``--max-macs`` / ``--max-flips`` budget as (number, unit): unit
    ``%``, ``k``, ``m``, ``g``, or ``""`` (a share when at most 1, else a count). Every budget
    takes this one grammar (a share above 100% allows more than there is: no limit)."""
    raw = str(text).strip().lower()
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(%|k|m|g)?", raw)
    # A flip budget is a share of the validation samples or a few of them, not a model's size.
    of, examples = (
        ("the validation samples", "(0.01 or 1%) or a count (5)")
        if what == "flips"
        else ("the source model", "(0.5 or 50%) or a count (250000, 250k, 1.5M)")
    )
    examples = f"of {of} {examples}"
    if match is None:
        raise AutotuneError(f"--max-{what} {text!r} is not a budget: give a share {examples}")
    number, unit = float(match.group(1)), match.group(2) or ""
    if unit == "" and number > 1 and "." in match.group(1) and "e" not in match.group(1):
        # 2.0 reads as two parameters, which nobody means: ask which was meant.
        noun = {"params": "parameters", "macs": "MACs"}.get(what, what)
        count = f"{number:.0f} ({noun})" if number.is_integer() else "a whole count"
        raise AutotuneError(
            f"--max-{what} {text!r} is ambiguous: a fraction is at most 1; write {count} or "
            f"{number * 100:g}% (a share of {of})"
        )
    if number == 0 and what != "flips":  # no flips is a budget; no parameters is no model
        raise AutotuneError(
            f"--max-{what} {text!r} allows no {what} at all: give a share {examples}"
        )
    return number, unit


def latency_budget(text: str) -> tuple[float, str]:
    """``--max-latency`` as (number, unit): ``0.5x`` is half the source model's latency (timed
    alternately with it), ``5ms`` milliseconds per batch of ``--latency-batch`` samples."""
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(x|ms)", str(text).strip().lower())
    if match is None or not float(match.group(1)) > 0:
        raise AutotuneError(
            f"--max-latency {text!r} is not a latency budget: give a ratio of the source "
            "model's latency (0.5x) or milliseconds per batch (5ms)"
        )
    return float(match.group(1)), match.group(2)


def budget_limit(text: str | float | int, whole: int, what: str) -> float:
    """A budget as an absolute count, ``whole`` being all there is (the source model's
    parameters, the validation samples): ``0.5`` and ``50%`` are shares of it; ``250000``,
    ``250k``, ``1.5M`` are counts."""
    number, unit = budget_parts(text, what)
    if unit == "%":
        return whole * number / 100
    if unit == "" and number <= 1:
        return whole * number
    return number * _SUFFIX[unit]
