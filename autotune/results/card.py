"""``best/README.md``: the bundle's model card, in Hugging Face's convention (YAML front matter
with a ``model-index`` of the metrics, then sections). Everything in it is read off the
bundle's ``config.yaml``, the one record of the export: the card derives nothing anew."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotune.paths import write_text_atomically
from autotune.results import yaml_text
from autotune.results.bundle_files import is_written, written
from autotune.results.notes import latency_text, noise_note


def write_card(folder: Path, config: dict[str, Any]) -> None:
    write_text_atomically(folder / "README.md", model_card(config), keep_old=False)


def model_card(config: dict[str, Any]) -> str:
    """The model card of the bundle whose ``config.yaml`` holds ``config``."""
    sections = [
        _front_matter(config),
        f"# {config['study']}: trial {config['trial']}, tuned and slimmed by autotune\n",
        _model(config),
        _data(config),
        _results(config),
        _size(config),
        _usage(config),
        _configuration(config),
        _reproduce(config),
    ]
    return "\n".join(sections)


def _front_matter(config: dict[str, Any]) -> str:
    m = config["metrics"]
    images = len(config.get("sample_shape", {}).get("model.pt2", [])) == 3
    task = "image-classification" if images else "tabular-classification"
    rows = [("validation", "val_accuracy", "Validation accuracy")]
    rows.append(("test", "test_accuracy", "Held-out test accuracy"))
    metrics = [
        {"type": "accuracy", "value": round(m[key], 4), "name": name}
        for _, key, name in rows
        if m.get(key) is not None
    ]
    data = config["data"]
    front = {
        "library_name": "pytorch",
        "pipeline_tag": task,
        "tags": [
            "autotune",
            "pytorch",
            *(["onnx"] if "model.onnx" in written(config["files"]) else []),
        ],
        "model-index": [
            {
                "name": f"{config['study']}-trial-{config['trial']}",
                "results": [
                    {
                        "task": {"type": task},
                        "dataset": {"name": str(data.get("spec")), "type": "custom"},
                        "metrics": metrics,
                    }
                ],
            }
        ],
    }
    return f"---\n{yaml_text.dump(front)}---\n"


def _model(config: dict[str, Any]) -> str:
    model, s = config["model"], config["structure"]
    changes = [f"fine-tuned layers: {', '.join(s['trained_layers']) or 'none'}"]
    pruned = [f"{layer} keeps {c['kept']}" for layer, c in s["channels"].items()]
    if pruned:
        changes.append(f"channels removed: {'; '.join(pruned)}")
    heads = [f"{name} keeps {h['kept']}" for name, h in s["heads"].items()]
    if heads:
        changes.append(f"attention heads removed: {'; '.join(heads)}")
    width = [f"{name} keeps {w['kept']}" for name, w in s.get("width", {}).items()]
    if width:
        changes.append(f"width (residual stream channels) removed: {'; '.join(width)}")
    if s.get("inputs") and s["inputs"]["dropped"]:
        changes.append(f"input features dropped: {', '.join(map(str, s['inputs']['dropped']))}")
    lines = [
        "## Model\n",
        f"A copy of `{model.get('path') or 'a model given in memory'}` ({model.get('format')}, "
        f"sha256 `{model.get('sha256')}`), adapted to the data below by autotune "
        f"{config['autotune_version']}: fine-tuned, and slimmed where listed (removed channels, "
        "heads, width and inputs are gone from the architecture, not masked).\n",
        *[f"- {c}" for c in changes],
        f"- weights: {config['weights']}",
        f"- chosen as {config['chosen']}",
        "",
    ]
    return "\n".join(lines)


def _data(config: dict[str, Any]) -> str:
    data = config["data"]
    samples = data.get("samples") or {}
    sizes = ", ".join(f"{n} {split}" for split, n in samples.items() if n is not None)
    lines = [
        "## Data\n",
        f"- spec: `{data.get('spec')}` (fingerprint `{data.get('fingerprint')}`)",
        f"- samples: {sizes or 'not recorded'}",
    ]
    if data.get("val_fraction") is not None:
        lines[-1] += (
            f"; a validation split, where the data has none, carved with fraction "
            f"{data['val_fraction']} and seed {data.get('split_seed')}"
        )
    for key, value in (data.get("preprocessing") or {}).items():
        lines.append(f"- preprocessing, {key}: {value}")
    if data.get("classes"):
        lines.append(f"- classes: {', '.join(map(str, data['classes']))}")
    return "\n".join([*lines, ""])


def _results(config: dict[str, Any]) -> str:
    m = config["metrics"]

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    lines = [
        "## Results\n",
        "| metric | this model | source model |",
        "| --- | --- | --- |",
        f"| validation {m['metric']} | {cell(m['val_' + m['metric']])} | "
        f"{cell(m['baseline_val_' + m['metric']])} |",
    ]
    if m.get("test_accuracy") is not None:
        lines.append(
            f"| held-out test accuracy | {cell(m['test_accuracy'])} | "
            f"{cell(m.get('baseline_test_accuracy'))} |"
        )
    lines.append("")
    for split, prefix in (("validation", "val"), ("held-out test", "test")):
        if m.get(f"{prefix}_fixed") is not None:
            lines.append(
                f"- {split}: {m[f'{prefix}_fixed']} samples the source got wrong are now right "
                f"(fixed), {m[f'{prefix}_broken']} it got right are now wrong (broken)"
            )
    if not m["validation_held_out"]:
        lines.append(
            "- refit on training + validation samples: the validation score is not held out"
        )
    note = noise_note(config)
    if note:
        lines.append(f"- {note}")
    return "\n".join([*lines, ""])


def _size(config: dict[str, Any]) -> str:
    s = config["structure"]
    params, macs = s["params"], s["macs"]
    lines = [
        "## Size and speed\n",
        f"- parameters: {params['model']:,} (source {params['source']:,})",
    ]
    if macs["model"] is not None and macs["source"] is not None:
        lines.append(f"- MACs per sample: {macs['model']:,} (source {macs['source']:,})")
    latency = s["latency_ms"]
    lines.append(
        f"- latency: {latency_text(latency)}, on {latency.get('device')} with "
        f"{latency.get('threads')} thread(s)"
    )
    onnx = config.get("onnx")
    if onnx is not None:
        times = onnx["latency_ms"]
        pytorch = "" if times["pytorch"] is None else f", PyTorch `model.pt2` {times['pytorch']} ms"
        lines.append(
            f"- ONNX: onnxruntime {times['onnxruntime']} ms per batch of {times['batch']} on the "
            f"CPU ({times['threads']} thread(s)){pytorch}; largest difference from the PyTorch "
            f"output {onnx['max_abs_diff']:.2g} on {onnx['checked_samples']} samples"
        )
    return "\n".join([*lines, ""])


def _usage(config: dict[str, Any]) -> str:
    """How to load each file written, in a few lines that run from inside the bundle's folder."""
    shapes = config.get("sample_shape", {})
    files = config["files"]
    loads = written(files)
    intro = (
        "Run from this folder. Each file, and what it needs:"
        if loads
        else "No model file could be written:"
    )
    lines = ["## How to use\n", f"{intro}\n"]
    for name in loads:
        shape = shapes.get("model.pt" if name == "model.pt" else "model.pt2")
        dims = ", ".join(str(n) for n in [4, *(shape or [])])
        lines += [f"`{name}`: {files[name]}\n", "```python", *_snippet(name, files[name], dims)]
        lines += ["```", ""]
    missing = [f"- `{n}` {how}" for n, how in files.items() if not is_written(how)]
    return "\n".join(lines + missing + ([""] if missing else []))


def _snippet(name: str, how: str, dims: str) -> list[str]:
    if name == "model.onnx":
        return [
            "import numpy as np",
            "import onnxruntime",
            "",
            "session = onnxruntime.InferenceSession('model.onnx')",
            f"x = np.random.rand({dims}).astype(np.float32)",
            "logits = session.run(None, {'input': x})[0]",
            "print(logits.shape)",
        ]
    load = how.split("  #")[0]
    return [
        "import torch",
        "",
        f"model = {load}",
        f"x = torch.rand({dims})",
        "with torch.no_grad():",
        "    logits = model(x)",
        "print(logits.shape)",
    ]


def _configuration(config: dict[str, Any]) -> str:
    fit = {k: config["fit"][k] for k in ("max_epochs", "patience", "seed", "device")}
    body = yaml_text.dump(
        {"params": config["params"] or "the source model, unchanged"}, sort_keys=True
    )
    return (
        "## Configuration\n\nThe trial's parameters (all of them, with the metrics and the "
        "structure, are in `config.yaml`):\n\n"
        f"```yaml\n{body}```\n\nTraining: {', '.join(f'{k} {v}' for k, v in fit.items())}.\n"
    )


def _reproduce(config: dict[str, Any]) -> str:
    lines = ["## Reproduce\n"]
    commands = [config["search_command"]] if config.get("search_command") else []
    again = config["reproduce"]
    # A search from Python on a model or data in memory is exported again from Python only.
    python = not again.startswith("autotune ")
    commands += [] if python else [again]
    if commands:
        lines += ["```bash", *commands, "```", ""]
    if python:
        lines += ["```python", again, "```", ""]
    return "\n".join(lines)
