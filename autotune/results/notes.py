"""Sentences the summary after a search and the model card (``best/README.md``) share: read off
an export's ``config.yaml``, so both say the same."""

from __future__ import annotations

import math
from typing import Any

from autotune.search.selection import standard_error

NOISE_ERRORS = 2.0
"""A validation gain under this many of its standard errors is called noise."""


def noise_note(config: dict[str, Any], hold_out: bool = True) -> str | None:
    """A warning when the exported model's validation gain over the source is within
    ``NOISE_ERRORS`` standard errors: the split is too small to tell that gain from luck. The
    gain's standard error is taken as that of a difference of two independent accuracies (the
    two models are scored on the same samples, so this errs on the side of warning). None when
    the split can tell, or when the metric is not accuracy.

    Without a test split it says how to hold one out, unless ``hold_out`` is False: the
    summary's ``no_test_note`` says it just above."""
    m = config["metrics"]
    samples = config.get("errors", {}).get("validation", {}).get("samples")
    if m["metric"] != "accuracy" or not samples or m["gain"] is None:
        return None
    errors = (standard_error(m[key], samples) for key in ("val_accuracy", "baseline_val_accuracy"))
    error = math.hypot(*errors)
    if abs(m["gain"]) >= NOISE_ERRORS * error:
        return None
    # Without a test split there is no held-out score to trust instead: hold one out.
    has_test = m.get("test_accuracy") is not None
    instead = "trust the held-out test score" if has_test else _hold_out(config)
    either = f"{instead}, or " if has_test or hold_out else ""
    return (
        f"note: on {samples} validation samples this gain is measured to ±{error:.3f} (one "
        f"standard error), so {m['gain']:+.4f} is within noise: {either}give more validation "
        "data (--val-fraction)"
    )


def no_test_note(config: dict[str, Any]) -> str | None:
    """A note where the data has no test split: the one score left is the validation score
    that picked the trial out of the others, which flatters it. None with a test split."""
    m = config["metrics"]
    if m.get("test_accuracy") is not None:
        return None
    return (
        f"note: no test split, so val {m['metric']} is the score that chose this trial "
        f"(optimistic, not held out): {_hold_out(config)} for a held-out score"
    )


def _hold_out(config: dict[str, Any]) -> str:
    """How to give the data a test split, for a CSV file (which holds none) or any other."""
    if str(config.get("data", {}).get("spec", "")).lower().endswith(".csv"):
        return (
            "hold out a test split (a CSV file holds none: give x_test, y_test beside the rest "
            "in a .pt or .npz data file)"
        )
    return "hold out a test split (x_test, y_test in a .pt or .npz data file; a test/ folder)"


def latency_text(latency: dict[str, Any]) -> str:
    """The model's speed against the source's, as the median ratio of interleaved runs."""
    if "ratio" not in latency:  # a bundle exported before ratios were measured
        return f"{latency['model']:.1f} ms per batch of 32 (source {latency['source']:.1f} ms)"
    return (
        f"{latency['ratio']:.2f}x the source's ±{latency['ratio_spread']:.2f} "
        f"({latency['model']:.2g} ms per batch of 32, timed alternately with the source)"
    )
