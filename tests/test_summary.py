"""The lines a search prints about its export (``results/summary.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from autotune.results.export import ExportResult
from autotune.results.summary import noise_note, summary_lines


def _exported(val_samples: int, gain: float, test: float = 0.80) -> ExportResult:
    metrics: dict[str, Any] = {
        "metric": "accuracy",
        "val_accuracy": 0.75 + gain,
        "baseline_val_accuracy": 0.75,
        "gain": gain,
        "validation_held_out": True,
        "test_accuracy": test,
        "baseline_test_accuracy": 0.80,
        "test_fixed": 4,
        "test_broken": 4,
    }
    config = {
        "metrics": metrics,
        "errors": {"validation": {"samples": val_samples}},
        "chosen": "the top trial on validation",
        "structure": {
            "params": {"model": 500, "source": 1000},
            "macs": {"model": None, "source": None},
            "latency_ms": {"model": 1.0, "source": 2.0, "ratio": 0.5, "ratio_spread": 0.01},
        },
        "files": {"model.pt": "torch.load(...)", "model.pt2": "not written: no"},
    }
    return ExportResult(Path("runs/x/best"), 3, nn.Identity(), config)


def test_the_summary_puts_the_sources_test_score_beside_the_exported_models() -> None:
    lines = summary_lines(_exported(val_samples=12, gain=0.25), top=None)
    # A +0.25 gain on 12 validation samples while the test score did not move: both are said.
    assert "held-out test accuracy 0.8000 (source 0.8000, +0.0000: 4 fixed, 4 broken)" in lines[0]
    assert lines[1].startswith("note: on 12 validation samples this gain is measured to ±0.16")
    assert "within noise" in lines[1]
    assert "model.pt2 not written: no" in lines


def test_with_no_model_file_written_the_summary_lists_the_files_that_were() -> None:
    exported = _exported(val_samples=12, gain=0.25)
    exported.config["files"]["model.pt"] = "not written: pickling failed (a lambda)"
    lines = summary_lines(exported, top=None)
    assert "exported to runs/x/best: config.yaml, README.md" in lines
    assert "model.pt not written: pickling failed (a lambda)" in lines


def test_the_summary_lists_the_error_grid_drawn_for_image_data() -> None:
    exported = _exported(val_samples=12, gain=0.25)
    exported.config["errors"]["grid"] = "errors.png"  # as results.errors records it
    lines = summary_lines(exported, top=None)
    assert "exported to runs/x/best: model.pt, errors.png, config.yaml, README.md" in lines


def test_a_gain_the_validation_split_can_resolve_gets_no_note() -> None:
    assert noise_note(_exported(val_samples=2000, gain=0.05).config) is None
    note = noise_note(_exported(val_samples=100, gain=0.05).config)
    assert note is not None and "on 100 validation samples" in note


def test_with_no_test_split_the_noise_note_asks_for_one_rather_than_to_trust_it() -> None:
    exported = _exported(val_samples=12, gain=0.25)
    exported.config["metrics"]["test_accuracy"] = None
    note = noise_note(exported.config)
    assert note is not None and "within noise" in note
    assert "trust the held-out test score" not in note
    assert "hold out a test split" in note


def test_a_csv_users_note_says_a_csv_file_holds_no_test_split() -> None:
    exported = _exported(val_samples=12, gain=0.25)
    exported.config["metrics"]["test_accuracy"] = None
    exported.config["data"] = {"spec": "runs/Train.CSV"}
    note = noise_note(exported.config)
    assert note is not None and "a CSV file holds none" in note
    assert "a .pt or .npz data file" in note and "test/ folder" not in note


def test_with_no_test_split_the_summary_says_the_validation_score_chose_the_trial() -> None:
    """On wine.csv the only score at the end was the validation one that picked the trial,
    with nothing saying it was not held out."""
    exported = _exported(val_samples=2000, gain=0.05)  # a gain the split resolves: no noise note
    exported.config["metrics"]["test_accuracy"] = None
    exported.config["data"] = {"spec": "wine.csv"}
    lines = summary_lines(exported, top=None)
    assert "held-out" not in lines[0]
    assert lines[1] == (
        "note: no test split, so val accuracy is the score that chose this trial (optimistic, "
        "not held out): hold out a test split (a CSV file holds none: give x_test, y_test beside "
        "the rest in a .pt or .npz data file) for a held-out score"
    )
    with_test = summary_lines(_exported(val_samples=2000, gain=0.05), top=None)
    assert not any("no test split" in line for line in with_test)


def test_with_no_test_split_and_a_gain_within_noise_the_summary_asks_for_one_once() -> None:
    # Both notes said how to hold out a test split, one line under the other.
    exported = _exported(val_samples=12, gain=0.25)
    exported.config["metrics"]["test_accuracy"] = None
    exported.config["data"] = {"spec": "wine.csv"}
    text = "\n".join(summary_lines(exported, top=None))
    assert text.count("hold out a test split") == 1, text
    assert text.count("a CSV file holds none") == 1, text
    assert "note: no test split, so val accuracy is the score that chose this trial" in text
    assert "so +0.2500 is within noise: give more validation data (--val-fraction)" in text
