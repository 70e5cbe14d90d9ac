"""The exported model's errors against the source model: fixed, broken, per class, and a grid
of a few fixed and broken samples for image data; the report's "Errors" section shows them."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autotune.load.tasks import Inputs, TaskData
from autotune.trial.flips import Flips, count_flips, predictions

SHOWN = 8
"""Fixed and broken samples drawn in the grid, each."""
GRID = "errors.png"
"""The grid's file in the export folder."""


def _split_errors(
    flips: Flips, before: torch.Tensor, after: torch.Tensor, y: torch.Tensor
) -> dict[str, Any]:
    fixed = ((before != y) & (after == y)).nonzero().flatten()[:SHOWN].tolist()
    broken = ((before == y) & (after != y)).nonzero().flatten()[:SHOWN].tolist()
    return {**flips.attrs(), "fixed_samples": fixed, "broken_samples": broken}


def exported_errors(
    source: nn.Module,
    reference: torch.Tensor | None,
    model: nn.Module,
    data: TaskData,
    full: TaskData,
    folder: Path,
) -> dict[str, Any]:
    """``config.yaml``'s ``errors``: on the validation split, and on the test split (read here
    for the exported model only); draws the validation grid into ``folder`` for image data.

    ``data`` is what the model takes (maybe fewer columns), ``full`` what the source takes;
    ``reference``: the source's validation predictions when the search has them already.
    """
    if reference is None:
        reference = predictions(source, full.x_val)
    after = predictions(model, data.x_val)
    val = count_flips(reference, after, data.y_val, data.classes)
    errors: dict[str, Any] = {"validation": _split_errors(val, reference, after, data.y_val)}
    if data.x_test is not None and data.y_test is not None and full.x_test is not None:
        before_t = predictions(source, full.x_test)
        after_t = predictions(model, data.x_test)
        test = count_flips(before_t, after_t, data.y_test, data.classes)
        errors["test"] = _split_errors(test, before_t, after_t, data.y_test)
    if data.x_val.ndim >= 3:
        v = errors["validation"]
        drawn = sample_grid(
            data.x_val, reference.cpu(), after.cpu(), data.y_val.cpu(), data.classes,
            v["fixed_samples"], v["broken_samples"], folder / GRID,
        )  # fmt: skip
        errors["grid"] = drawn.name if drawn is not None else None
    return errors


def sample_grid(
    x: Inputs,
    before: torch.Tensor,
    after: torch.Tensor,
    y: torch.Tensor,
    classes: list[str] | None,
    fixed: list[int],
    broken: list[int],
    path: Path,
) -> Path | None:
    """Two rows of images, fixed then broken, each titled label / source / model; None when
    there is no sample to draw."""
    if not fixed and not broken:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autotune.results.charts import save_figure

    def name(c: int) -> str:
        return classes[c] if classes is not None else str(c)

    cols = max(len(fixed), len(broken), 1)
    fig, axes = plt.subplots(2, cols, figsize=(1.4 * cols, 3.4), squeeze=False)
    for row, (what, indices) in enumerate((("fixed", fixed), ("broken", broken))):
        for col in range(cols):
            ax = axes[row][col]
            ax.axis("off")
            if col >= len(indices):
                continue
            i = indices[col]
            image = x[i].float().cpu()
            if image.ndim == 3 and image.shape[0] == 1:
                image = image[0]
            elif image.ndim == 3:  # channels first: drawn as RGB
                image = image[:3].permute(1, 2, 0)
            low, high = image.min(), image.max()
            image = (image - low) / (high - low + 1e-12)
            ax.imshow(image.numpy(), cmap="gray" if image.ndim == 2 else None)
            label = f"{name(int(y[i]))}: {name(int(before[i]))}→{name(int(after[i]))}"
            ax.set_title(f"{what}\n{label}", fontsize=7)
    fig.suptitle("label: source → model", fontsize=8)
    return save_figure(fig, path)


def error_metrics(errors: dict[str, Any]) -> dict[str, Any]:
    """The counts ``config.yaml``'s ``metrics`` lists: ``val_fixed``, ``test_broken``, ...,
    and ``baseline_test_accuracy``."""
    short = {"validation": "val", "test": "test"}
    counts = {
        f"{short[split]}_{key}": errors[split][key] if split in errors else None
        for split in short
        for key in ("fixed", "broken", "flip_rate")
    }
    test = errors.get("test")
    # The source's held-out score, beside the exported model's ``test_accuracy``.
    counts["baseline_test_accuracy"] = test["source_right"] / test["samples"] if test else None
    return counts


def errors_html(errors: dict[str, Any] | None, grid: Path | None) -> str:
    """The report's "Errors" section for the exported model (``best_export``'s ``errors``)."""
    if not errors or "validation" not in errors:
        return "<p class=note>no exported model with an error count yet (autotune export)</p>"
    parts = []
    for split in ("validation", "test"):
        e = errors.get(split)
        if e is None:
            continue
        right, fixed, broken, n = e["source_right"], e["fixed"], e["broken"], e["samples"]
        matrix = (
            "<table class=flips><tr><th></th><th>model right</th><th>model wrong</th></tr>"
            f"<tr><th>source right</th><td>{right - broken}</td><td>{broken} broken</td></tr>"
            f"<tr><th>source wrong</th><td>{fixed} fixed</td>"
            f"<td>{n - right - fixed}</td></tr></table>"
        )
        rows = "".join(
            f"<tr><td>{html.escape(str(c))}</td><td>{_pct(b)}</td><td>{_pct(a)}</td></tr>"
            for c, (b, a) in e["per_class_accuracy"].items()
        )
        per_class = (
            "<table class=per-class><tr><th>class</th><th>source</th><th>model</th></tr>"
            f"{rows}</table>"
        )
        parts.append(
            f"<h3>{split} split: {fixed} errors fixed, {broken} broken "
            f"(negative flip rate {e['flip_rate']:.2%})</h3>{matrix}{per_class}"
        )
    if grid is not None and grid.is_file():
        data = base64.b64encode(grid.read_bytes()).decode()
        parts.append(
            f'<img class=grid alt="fixed and broken validation samples" '
            f'src="data:image/png;base64,{data}">'
        )
    return "\n".join(parts)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"
