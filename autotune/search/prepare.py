"""Before trials (and before rebuilding one for export): fit the space to the model, get the
rankings it reads, and set up the ``TrialMaker``. The search and ``export`` share these, so an
exported trial is rebuilt exactly as the search built it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import optuna
from torch import nn

from autotune.config import AnalysisOptions, SearchSettings
from autotune.load.anatomy import has_classifier
from autotune.load.job import Job
from autotune.paths import analysis_dir
from autotune.rank.analysis import Analysis, unpruned_note
from autotune.rank.analyze import analyze_job
from autotune.rank.gates import Site, sites
from autotune.search.optuna_internals import storage_of
from autotune.search.space import SearchSpace
from autotune.trial.augment import MIN_SIDE, can_augment
from autotune.trial.checkpoints import Checkpoints
from autotune.trial.devices import resolve_device
from autotune.trial.flips import predictions
from autotune.trial.freeze import can_set_dropout
from autotune.trial.maker import TrialMaker
from autotune.trial.prune import feature_layer

STRUCTURE = (
    "prune",
    "prune_layers",
    "prune_width",
    "drop_features",
    "importance",
    "unfreeze_order",
)
"""Space parameters that change the model's structure (they need an eager, analysable model)."""


def adapt_space(space: SearchSpace, job: Job) -> tuple[SearchSpace, list[str]]:
    """The space without the parameters the model cannot take, and a note for each left out."""
    notes = []
    fmt = job.model.format

    def leave_out(names: tuple[str, ...], why: str) -> None:
        nonlocal space
        present = [n for n in names if n in space.params]
        if not present:
            return
        listed = ", ".join(repr(n) for n in present)
        notes.append(f"{why}; {listed} {'is' if len(present) == 1 else 'are'} left out")
        for name in present:
            space = space.without(name)

    if not can_set_dropout(job.model.module) and "dropout" in space.params:
        why = (  # true of a program with no dropout too: not "keep their dropout"
            f"dropout cannot be set in or added to {job.model.kind}"
            if job.model.is_program
            else "the model has no Dropout, nor a module around its classifier to add one to"
        )
        leave_out(("dropout",), why)
    if space.uses_rankings() and job.model.is_program:
        leave_out(STRUCTURE, f"{fmt} models cannot be analysed, pruned or cut down")
    if any(v != "none" for v in space.values_of("augment")) and not can_augment(
        tuple(job.data.x_val.shape[1:])
    ):
        shape = tuple(job.data.x_val.shape[1:])
        why = f"inputs of shape {shape} are not images of {MIN_SIDE} px or more to crop"
        leave_out(("augment",), why)
    if space.may_be_nonzero("drop_features"):
        reason = _why_no_feature_dropping(job)
        if reason:
            leave_out(("drop_features",), reason)
    if space.may_be_nonzero("prune_width") and not job.model.is_program:
        module = job.model.module
        if not any(isinstance(m, nn.LayerNorm) for m in module.modules()):
            # A conv net: its widths are channels that ``prune`` removes; nothing to say.
            space = space.without("prune_width")
        elif not any(site.width for site in job_sites(job)):
            why = "the model's residual stream is read outside its LayerNorms (rank.width)"
            leave_out(("prune_width",), f"its width cannot be removed exactly: {why}")
    return space, notes


def job_sites(job: Job) -> list[Site]:
    """The gate sites of ``job``'s model (``rank.gates.sites``, on two validation samples),
    traced once per job: the space's adaptation, the size floor and the runner all read them,
    and each tracing checks every residual stream's removal on copies of the model
    (ConvNeXt-tiny at 64 px: about 6 s a time on 2 cores)."""
    if job.sites is None:
        job.sites = sites(job.model.module, job.data.x_val[:2].cpu())
    return job.sites


def prunable_layers(job: Job, space: SearchSpace) -> tuple[str, ...]:
    """The layers whose channels ``prune`` ranks and removes (a residual stream's writers lose
    theirs with its width instead); none where ``space`` reads no ranking."""
    if not space.uses_rankings():
        return ()
    return tuple(s.layer for s in job_sites(job) if s.prunable and not s.width)


def space_for(job: Job) -> tuple[str, str]:
    """The shipped space that fits the model, and why: ``vision`` for image models (a
    convolution anywhere: conv nets, and ViTs by their patch embedding), ``tabular`` for
    feature-vector models, ``default`` (fine-tuning only) where the model cannot be analysed.
    """
    if job.model.is_program:
        return "default", f"{job.model.kind} cannot be analysed or pruned: fine-tuning only"
    if not has_classifier(job.model.module):
        return "default", "no nn.Linear classifier to rank units by: fine-tuning only"
    if job.data.x_val.ndim == 2:
        return "tabular", "feature-vector input: SHAP-ranked features, neurons and layers"
    if any(isinstance(m, nn.modules.conv._ConvNd) for m in job.model.module.modules()):
        return "vision", "an image model: SHAP-ranked channels, neurons, heads and layers"
    return "default", "no convolution and no feature-vector input: fine-tuning only"


def _why_no_feature_dropping(job: Job) -> str | None:
    if job.data.x_val.ndim != 2:
        return "the input is not a feature vector, so there are no features to drop"
    try:
        feature_layer(job.model.module, job.data.x_val[:2])
    except ValueError as e:
        return str(e)
    return None


def make_maker(job: Job, settings: SearchSettings) -> TrialMaker:
    """A ``TrialMaker`` for ``job`` with ``settings`` (resolved), its data on the device."""
    assert settings.max_epochs is not None and settings.patience is not None, "resolve settings"
    device = resolve_device(settings.device)
    data = job.data.to(device)
    reference = predictions(job.model.module.to(device), data.x_val)
    return TrialMaker(
        job.model.module, data, {}, device,
        settings.max_epochs, settings.patience, settings.metric, settings.seed, reference,
        amp=settings.amp, channels_last=settings.channels_last,
    )  # fmt: skip


def run_analyses(
    job: Job,
    space: SearchSpace,
    analyses: dict[str, Analysis],
    out: Path | None = None,
    say: Callable[[str], None] | None = None,
) -> None:
    """Add to ``analyses`` (in place) each ranking the space reads that is not there yet.

    They come from the cache when the model, data and options are the same; each is saved to
    ``OUT/analysis/METHOD.json`` when ``out`` is given.
    """
    options = AnalysisOptions(**space.analysis)
    noted = False
    for method in space.methods():
        if method in analyses:
            continue
        started = time.perf_counter()
        analysis = analyze_job(job, method, options)
        if out is not None:
            analysis.save(analysis_dir(out) / f"{method}.json")
        if say is not None:
            took = time.perf_counter() - started
            how = "cached" if analysis.meta.get("cached") else f"{took:.1f}s"
            heads, streams = len(analysis.head_modules()), len(analysis.width)
            parts = [f"{len(analysis.channels) - heads} prunable layers"]
            if heads:
                parts.append(f"the heads of {heads} attention module{'s' if heads > 1 else ''}")
            if streams:
                parts.append(f"the width of {streams} residual stream{'s' if streams > 1 else ''}")
            ranked = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
            say(
                f"{method} analysis: {ranked}, {analysis.meta.get('errors', 0)} mistakes "
                f"explained ({how})"
            )
            note = unpruned_note(analysis.unpruned())
            if note is not None and not noted:
                say(f"note: {note}")
                noted = True
        analyses[method] = analysis


def study_checkpoints(settings: SearchSettings, study: optuna.Study | None = None) -> Checkpoints:
    """Where the study keeps its trials' weights. Given the ``study``, the folder that every
    study of the output folder shared before each had its own is read too when the storage
    holds this study alone: the files there name no study."""
    alone = False
    if study is not None:
        alone = optuna.study.get_all_study_names(storage_of(study)) == [study.study_name]
    return Checkpoints.of(settings.out, settings.study_name, alone)
