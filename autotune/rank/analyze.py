"""Run one importance method on a job's validation data, with a cache.

``analyze_job`` scores a job's model with one method (see ``rank.methods``) and returns an
``Analysis``. Results are cached by model hash, data fingerprint and options, so a second search
on the same model and data starts at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import torch

from autotune.config import AnalysisOptions
from autotune.errors import AutotuneError
from autotune.load.anatomy import layers
from autotune.load.job import Job
from autotune.paths import cache_dir, check_writable
from autotune.rank.analysis import FORMAT_VERSION, Analysis
from autotune.rank.methods import METHODS, score


def check_analyzable(job: Job) -> None:
    """Gates need hooks on an eager module: TorchScript and torch.export programs have none."""
    if job.model.is_program:
        raise AutotuneError(
            f"{job.model.kind} cannot be analysed or pruned (its modules take no "
            "hooks and cannot be resized): pass a state_dict with --arch, or a pickled module "
            "with --trust-model"
        )


def check_cache() -> None:
    """Fail before the analysis when its result could not be cached: it was lost to a
    traceback after it."""
    fix = "set AUTOTUNE_CACHE_DIR to a folder you can write to"
    check_writable(cache_dir() / "analysis", "the analysis cache", fix)


def cache_key(job: Job, method: str, options: AnalysisOptions) -> str:
    what = {
        "model": job.model.sha256,
        "data": job.data.fingerprint(),
        "method": method,
        "options": dataclasses.asdict(options),
        "format": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


def cache_path(job: Job, method: str, options: AnalysisOptions) -> Path:
    """Where ``analyze_job`` keeps this analysis between searches."""
    return cache_dir() / "analysis" / f"{method}-{cache_key(job, method, options)}.json"


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
    path = cache_path(job, method, options)
    if cache and path.is_file():
        try:
            cached = Analysis.load(path)
            cached.meta["cached"] = True
            return cached
        except AutotuneError:
            path.unlink(missing_ok=True)  # a stale or broken entry is recomputed
    if cache:
        check_cache()
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
        width={k: [float(v) for v in w] for k, w in scores.width.items()},
        meta={
            **dataclasses.asdict(options),
            "samples": len(x),
            "errors": scores.errors,
            "errors_driven": scores.driven,
            "seconds": round(seconds, 3),
            "threads": torch.get_num_threads(),
            "model_sha256": job.model.sha256,
            "data_fingerprint": data.fingerprint(),
            "all_layers": [unit.name for unit in layers(job.model.module)],
            "unpruned": scores.unpruned,
            "cached": False,
        },
    )
    if cache:
        result.save(path)
    return result
