"""What a search says about its export when it ends: the scores beside the source's, whether
the validation split could tell the gain from noise, the size, and the files written."""

from __future__ import annotations

from typing import Any

from autotune.results.bundle_files import bundle, is_written
from autotune.results.export import ExportResult
from autotune.results.notes import latency_text, no_test_note, noise_note
from autotune.results.onnx_export import onnx_line
from autotune.results.rows import TrialRow

__all__ = ["file_lines", "latency_text", "noise_note", "summary_lines"]


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
    no_test = no_test_note(best.config)  # says how to hold out a test split: said once
    for note in (no_test, noise_note(best.config, hold_out=no_test is None)):
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
    lines.append(f"exported to {best.folder}: {', '.join(bundle(best.config))}")
    return lines + file_lines(best.config)


def file_lines(config: dict[str, Any]) -> list[str]:
    """A line for each file that was not written and why, and the ONNX check's: under a
    search's summary and under ``autotune export``'s line."""
    files = config["files"]
    lines = [f"{n} {how}" for n, how in sorted(files.items()) if not is_written(how)]
    onnx = onnx_line(files, config.get("onnx"))
    return lines + ([onnx] if onnx else [])
