"""What a search says about its export when it ends: the scores beside the source's, whether
the validation split could tell the gain from noise, the size, and the files written."""

from __future__ import annotations

import math
from typing import Any

from autotune.results.export import ExportResult
from autotune.results.rows import TrialRow
from autotune.search.selection import standard_error

NOISE_ERRORS = 2.0
"""A validation gain under this many of its standard errors is called noise."""


def summary_lines(best: ExportResult, top: TrialRow | None) -> list[str]:
    """The lines printed under the leaderboard for the exported trial ``best``; ``top``: the
    top trial on validation, named when it is not the one exported."""
    m = best.config["metrics"]
    name = m["metric"]
    line = (
        f"exported: trial {best.trial}, val {name} {m['val_' + name]:.4f} "
        f"(baseline {m['baseline_val_' + name]:.4f}, gain {m['gain']:+.4f})"
    )
    if not m["validation_held_out"]:
        line += " (refit: the validation samples were trained on)"
    if m["test_accuracy"] is not None:
        line += f"; held-out test accuracy {m['test_accuracy']:.4f}"
        if m.get("baseline_test_accuracy") is not None:
            change = m["test_accuracy"] - m["baseline_test_accuracy"]
            line += (
                f" (source {m['baseline_test_accuracy']:.4f}, {change:+.4f}: "
                f"{m['test_fixed']} fixed, {m['test_broken']} broken)"
            )
    lines = [line]
    note = noise_note(best.config)
    if note:
        lines.append(note)
    if top is not None and top.number != best.trial:  # say why the top one was not exported
        lines.append(f"chosen as {best.config['chosen']}")
    size = best.config["structure"]
    params, macs = size["params"], size["macs"]
    counted = (  # TorchScript and .pt2 programs have no MAC count
        f"{macs['model']:,} MACs per sample ({macs['model'] / max(macs['source'], 1):.0%}), "
        if macs["model"] is not None and macs["source"] is not None
        else ""
    )
    lines.append(
        f"size: {params['model']:,} parameters ({params['model'] / params['source']:.0%} "
        f"of the source), {counted}latency {latency_text(size['latency_ms'])}"
    )
    files = best.config["files"]
    written = sorted(n for n, how in files.items() if not how.startswith("not written"))
    lines.append(f"exported to {best.folder}: {', '.join(written)}, config.yaml")
    lines += [f"{n} {files[n]}" for n in sorted(set(files) - set(written))]
    return lines


def noise_note(config: dict[str, Any]) -> str | None:
    """A warning when the exported model's validation gain over the source is within
    ``NOISE_ERRORS`` standard errors: the split is too small to tell that gain from luck. The
    gain's standard error is taken as that of a difference of two independent accuracies (the
    two models are scored on the same samples, so this errs on the side of warning). None when
    the split can tell, or when the metric is not accuracy."""
    m = config["metrics"]
    samples = config.get("errors", {}).get("validation", {}).get("samples")
    if m["metric"] != "accuracy" or not samples or m["gain"] is None:
        return None
    errors = (standard_error(m[key], samples) for key in ("val_accuracy", "baseline_val_accuracy"))
    error = math.hypot(*errors)
    if abs(m["gain"]) >= NOISE_ERRORS * error:
        return None
    return (
        f"note: on {samples} validation samples this gain is measured to ±{error:.3f} (one "
        f"standard error), so {m['gain']:+.4f} is within noise: trust the held-out test score, "
        "or give more validation data (--val-fraction)"
    )


def latency_text(latency: dict[str, Any]) -> str:
    """The model's speed against the source's, as the median ratio of interleaved runs."""
    if "ratio" not in latency:  # a bundle exported before ratios were measured
        return f"{latency['model']:.1f} ms per batch of 32 (source {latency['source']:.1f} ms)"
    return (
        f"{latency['ratio']:.2f}x the source's ±{latency['ratio_spread']:.2f} "
        f"({latency['model']:.2g} ms per batch of 32, timed alternately with the source)"
    )
