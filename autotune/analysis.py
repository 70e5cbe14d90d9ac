"""The analysis: rankings of channels, layers and input features, saved as JSON and cached.

``analyze_job`` scores a job's model on its validation data with one importance method (see
``importance``) and returns an ``Analysis``: the pruning order of each layer's channels, the
unfreezing order of the layers, and the dropping order of the input features. Results are cached
by model hash, data fingerprint and options, so a second search on the same model and data
starts at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Group
from rich.jupyter import JupyterMixin

from autotune.demo import cache_dir
from autotune.errors import AutotuneError
from autotune.importance import EXPLAINERS, METHODS, score
from autotune.job import Job
from autotune.surgery import layers

FORMAT_VERSION = 1


@dataclass(frozen=True)
class AnalysisOptions:
    """How an analysis samples: defaults measured in BENCHMARKS.md (bench/importance.py)."""

    samples: int = 128
    """Validation samples explained."""
    background: int = 32
    """Random unit coalitions the ``shap`` method integrates from."""
    nsamples: int = 16
    """Expected-gradient samples per explained sample (``shap``)."""
    seed: int = 0
    explainer: str = "gradient"
    """``gradient`` (shap's GradientExplainer) or ``deep`` (DeepExplainer), for ``shap``."""

    def __post_init__(self) -> None:
        if self.explainer not in EXPLAINERS:
            raise AutotuneError(
                f"unknown explainer {self.explainer!r}: use one of {list(EXPLAINERS)}"
            )
        for name in ("samples", "background", "nsamples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise AutotuneError(f"analysis {name} must be a positive integer, got {value!r}")


@dataclass
class Analysis(JupyterMixin):
    """One method's rankings of a model's units on the user's data.

    Renders as its tables in a terminal (``rich.print``) or a notebook cell.
    """

    method: str
    channels: dict[str, list[float]]
    """Prunable layer -> importance of each output channel (higher: keep)."""
    layers: dict[str, float] | None
    """Layer -> error score (higher: drives more mistakes); None when the method has none."""
    features: list[float] | None
    """Importance of each input feature (feature-vector models only)."""
    feature_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    """Options, timings, hashes: what the analysis was computed from."""

    def __rich__(self) -> Group:
        from autotune.report_analysis import tables

        return Group(*tables(self))

    def pruning_order(self, layer: str) -> list[int]:
        """Channels of ``layer``, least important first."""
        return [int(i) for i in np.argsort(self.channels[layer], kind="stable")]

    def unfreeze_order(self, all_layers: list[str]) -> list[str]:
        """Layers by error score, highest first; unscored ones after, from the output back."""
        scored = self.layers or {}
        ranked = sorted((n for n in all_layers if n in scored), key=lambda n: -scored[n])
        return ranked + [n for n in reversed(all_layers) if n not in scored]

    def feature_order(self) -> list[int]:
        """Input features, least important first."""
        if self.features is None:
            raise AutotuneError(
                "this analysis has no feature scores: the model's input is not a vector"
            )
        return [int(i) for i in np.argsort(self.features, kind="stable")]

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Analysis:
        if raw.get("format_version") != FORMAT_VERSION:
            raise AutotuneError(
                f"analysis format {raw.get('format_version')!r} is not {FORMAT_VERSION}: "
                "re-run the analysis"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in fields})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Analysis:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise AutotuneError(f"analysis file {str(path)!r} does not exist") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AutotuneError(
                f"analysis file {str(path)!r} is not valid JSON ({e}): delete it and re-run"
            ) from e
        return cls.from_dict(raw)


def check_analyzable(job: Job) -> None:
    """Gates need hooks on an eager module: TorchScript and torch.export programs have none."""
    if job.model.format in ("torchscript", "export"):
        raise AutotuneError(
            f"a {job.model.format} model cannot be analysed or pruned (its modules take no "
            "hooks and cannot be resized): pass a state_dict with --arch, or a pickled module "
            "with --trust-model"
        )


def cache_key(job: Job, method: str, options: AnalysisOptions) -> str:
    what = {
        "model": job.model.sha256,
        "data": job.data.fingerprint(),
        "method": method,
        "options": dataclasses.asdict(options),
        "format": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


def analyze_job(
    job: Job,
    method: str = "shap",
    options: AnalysisOptions | None = None,
    cache: bool = True,
) -> Analysis:
    """Score ``job``'s model on its validation data; reuse a cached result when there is one."""
    if method not in METHODS:
        raise AutotuneError(f"unknown importance method {method!r}: use one of {list(METHODS)}")
    check_analyzable(job)
    options = options or AnalysisOptions()
    path = cache_dir() / "analysis" / f"{method}-{cache_key(job, method, options)}.json"
    if cache and path.is_file():
        try:
            cached = Analysis.load(path)
            cached.meta["cached"] = True
            return cached
        except AutotuneError:
            path.unlink(missing_ok=True)  # a stale or broken entry is recomputed
    data = job.data
    order = torch.randperm(len(data.x_val), generator=torch.Generator().manual_seed(options.seed))
    chosen = order[: options.samples]
    x, y = data.x_val[chosen].cpu(), data.y_val[chosen].cpu()
    started = time.perf_counter()
    try:
        scores = score(
            method,
            job.model.module,
            x,
            y,
            background=options.background,
            nsamples=options.nsamples,
            seed=options.seed,
            explainer=options.explainer,
        )
    except ValueError as e:
        raise AutotuneError(str(e)) from e
    seconds = time.perf_counter() - started
    result = Analysis(
        method=method,
        channels={k: [float(v) for v in s] for k, s in scores.channels.items()},
        layers=scores.layers,
        features=None if scores.features is None else [float(v) for v in scores.features],
        feature_names=list(data.feature_names) if data.feature_names else None,
        meta={
            **dataclasses.asdict(options),
            "samples": len(x),
            "errors": scores.errors,
            "seconds": round(seconds, 3),
            "threads": torch.get_num_threads(),
            "model_sha256": job.model.sha256,
            "data_fingerprint": data.fingerprint(),
            "all_layers": [unit.name for unit in layers(job.model.module)],
            "cached": False,
        },
    )
    if cache:
        result.save(path)
    return result
