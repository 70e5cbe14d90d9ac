"""The grammar of the budgets given on the command line: ``--max-params``, ``--max-macs``,
``--max-flips`` (a share or a count) and ``--max-latency`` (a ratio or milliseconds)."""

from __future__ import annotations

import re

from autotune.errors import AutotuneError

_SUFFIX = {"": 1.0, "#": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_NOUN = {"params": "parameters", "macs": "MACs"}


def budget_parts(text: str | float | int, what: str) -> tuple[float, str]:
    """A ``--max-params`` / ``--max-macs`` / ``--max-flips`` budget as (number, unit): unit
    ``%``, ``k``, ``m``, ``g``, or ``""`` (a share when at most 1, else a count; ``#`` for a
    ``--max-flips`` of a bare 1, one flip). Every budget takes this one grammar (a share of
    100% or more allows all there is: no limit, which ``check_constrains`` refuses)."""
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
    if what == "flips" and raw == "1":
        # All of the samples would limit nothing: a bare 1 is one flip ("#", a count).
        return number, "#"
    if unit == "" and number > 1 and "." in match.group(1) and "e" not in match.group(1):
        # 2.0 reads as two parameters, which nobody means: ask which was meant.
        count = (
            f"{number:.0f} ({_NOUN.get(what, what)})" if number.is_integer() else "a whole count"
        )
        # A share of 100% or more is refused below: offer only the count.
        share = "a share below 1 " + ("(0.01 or 1%)" if what == "flips" else "(0.5 or 50%)")
        raise AutotuneError(
            f"--max-{what} {text!r} is ambiguous: a fraction is at most 1; write {count} or "
            f"{share} (a share of {of})"
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


def check_constrains(text: str | float | int | None, what: str, source: int | None = None) -> None:
    """Refuse a budget that allows all there is or more: a ``--max-params`` / ``--max-macs`` of
    the whole source model (trials only remove units, so every trial would be within it), a
    ``--max-flips`` of all the validation samples (no model breaks more). Such a budget is
    likely a mistyped share or count. A share is checked without the model or data (``source``
    None), before they load; a count needs the whole it is counted against (the source's size,
    the validation samples), so it is checked once that is known."""
    if text is None:
        return
    number, unit = budget_parts(text, what)
    share = number / 100 if unit == "%" else number if unit == "" and number <= 1 else None
    flips = what == "flips"
    of = "the validation samples" if flips else f"the source model's {_NOUN[what]}"
    if share is not None and share >= 1:
        allows = f"{share:.0%} of {of}"
    elif source is not None and (limit := budget_limit(text, source, what)) >= source:
        whole = f"the {source:,} validation samples" if flips else f"the source model's {source:,}"
        allows = f"{limit:,.0f} {_NOUN.get(what, what)}, at least {whole}"
    else:
        return
    why, fix = (
        ("no model breaks more than all of them", "a share below 1 (0.01 or 1%) or a count (5)")
        if flips
        else ("trials only remove units", "a share below 1 (0.5 or 50%) or a smaller count")
    )
    raise AutotuneError(
        f"--max-{what} {text!r} allows {allows}, so it limits nothing ({why}): give {fix}, or "
        f"leave --max-{what} out"
    )
