"""The Python API: ``search()`` takes paths or in-memory objects and returns a ``SearchResult``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import torch
from rich.console import Console
from rich.jupyter import JupyterMixin
from torch import nn
from torch.utils.data import Dataset

from autotune.budget_text import check_constrains
from autotune.config import BUDGETS, AnalysisOptions, Explainer, SearchSettings
from autotune.errors import DataError, ModelLoadError
from autotune.interrupts import deferred
from autotune.load.job import DataSpec, Job, ModelSpec, in_memory
from autotune.load.models import LoadedModel
from autotune.load.tasks import TaskData, from_datasets
from autotune.paths import (
    check_storage,
    check_writable,
    remove_made,
    replaced_bundle,
    study_file,
)
from autotune.rank.analysis import Analysis
from autotune.rank.analyze import analyze_job, check_cache
from autotune.results.export import ExportResult, export_trial
from autotune.results.finish import finish, workspace
from autotune.results.leaderboard import Leaderboard
from autotune.results.live import LiveLeaderboard
from autotune.results.onnx_export import export_formats
from autotune.search.display import output_console
from autotune.search.outage import raise_outage
from autotune.search.prepare import space_for
from autotune.search.resume_store import check_store
from autotune.search.runner import Search
from autotune.search.space import SearchSpace, load_space
from autotune.search.storage import local_file, probe_storage
from autotune.search.study_file import settle
from autotune.trial.devices import resolve_device
from autotune.trial.fit import configure_threads

if TYPE_CHECKING:
    import pandas as pd


@dataclass(repr=False)
class SearchResult(JupyterMixin):
    """A finished search: the study, its leaderboard, and the exported best model."""

    search: Search
    study: optuna.Study
    best: ExportResult | None
    """The best trial's bundle (None when the study has no completed trial)."""
    report: Path | None = None
    """The study's ``report.html``."""

    @property
    def analyses(self) -> dict[str, Analysis]:
        """The rankings the search read, by method (empty when its space used none)."""
        return self.search.analyses

    @property
    def analysis(self) -> Analysis | None:
        """The ``shap`` analysis, or the only one there is."""
        found = self.search.analyses
        return found.get("shap") or next(iter(found.values()), None)

    @property
    def leaderboard(self) -> Leaderboard:
        return Leaderboard.from_study(self.study, self.search.settings.metric)

    @property
    def frame(self) -> pd.DataFrame:
        """Every trial as a pandas DataFrame, best first."""
        return self.leaderboard.to_frame()

    @property
    def best_model(self) -> nn.Module | None:
        return None if self.best is None else self.best.model

    @property
    def best_config(self) -> dict[str, Any] | None:
        return None if self.best is None else self.best.config

    def export(self, folder: str | Path, trial: int | None = None) -> ExportResult:
        """Write trial ``trial`` (default: the best) to ``folder``."""
        return export_trial(workspace(self.search), self.study, trial, Path(folder))

    def __rich__(self) -> Leaderboard:
        return self.leaderboard

    def __str__(self) -> str:
        """``print(result)`` in a script: the leaderboard, and where the best model went."""
        where = f"\nexported to {self.best.folder}" if self.best is not None else ""
        return f"{self.leaderboard}{where}"

    def __repr__(self) -> str:
        return f"<SearchResult: study {self.study.study_name!r}, {self.leaderboard!r}>"


def search(
    model: str | Path | ModelSpec | nn.Module | torch.export.ExportedProgram | LoadedModel,
    data: str | Path | DataSpec | TaskData | Dataset,
    *,
    space: str | Path | Mapping[str, Any] | SearchSpace = "auto",
    trials: int = 20,
    out: str | Path | None = None,
    console: Console | None = None,
    command: str | None = None,
    **settings: Any,
) -> SearchResult:
    """Run (or continue) a search and export its best model.

    Args:
        model: A model file path, ``"demo"``, an ``nn.Module`` (a TorchScript one is searched
            as a program: fine-tuning only), a torch.export ``ExportedProgram`` or a
            ``LoadedModel``.
        data: A data spec (path, ``sklearn:NAME``, ``demo``), a ``TaskData``, or a torch
            ``Dataset`` of ``(input, label)`` pairs.
        space: ``auto`` (the shipped space that fits the model: ``vision`` for conv nets,
            ``tabular`` for feature-vector models, ``default`` where the model cannot be
            analysed), a shipped space name, a YAML path, a dict, or a ``SearchSpace``.
        trials: Trials in the study, the baseline not counted.
        out: Output folder (default ``runs/<study_name>``).
        console: Where the leaderboard goes (default: the terminal; a log gets whole lines).
        command: The command line to record in the exported config.
        **settings: Further ``SearchSettings`` fields (``max_epochs``, ``seed``, ``storage``,
            ``workers``, ``allow_changes``, ``checkpoint_every``, ``checkpoint_store``,
            ``export="onnx"``...).
    """
    study_name = settings.pop("study_name", None) or default_study_name(model)
    folder = Path(out) if out is not None else Path("runs") / study_name
    the_settings = SearchSettings.of(trials=trials, out=folder, study_name=study_name, **settings)
    # Mistakes in the settings end the search before the model loads and before any folder
    # is made; the space's fit section, read later, only fills in what is not given.
    resolve_device(the_settings.resolved({}).device)  # --device gpu: before the model loads
    # A share of 100% or more (a size count is checked once the model loads).
    for what in (*BUDGETS, "flips"):
        check_constrains(getattr(the_settings, f"max_{what}"), what)
    export_formats(the_settings.export)  # a missing autotune[onnx] too
    storage = the_settings.storage
    check_storage(storage)  # a mistyped URL: refused before any folder is made
    check_store(the_settings.checkpoint_store)
    server = local_file(storage, folder) is None
    if server:  # a server that cannot be reached leaves no output folder behind
        probe_storage(storage, folder)
    made = check_writable(folder)
    try:
        if not server:  # a damaged study file, in the folder that now exists
            probe_storage(storage, folder)
        job = make_job(model, data)
        console = console or output_console()
        if note := replaced_bundle(folder, study_name):
            console.print(note, highlight=False)
        if isinstance(space, str) and space == "auto":
            space, why = space_for(job)
            hint = "" if space == "default" else "; --space default fine-tunes only"
            said = f"space: {space} ({why}{hint})"
            console.print(said, highlight=False)
        the_space = space if isinstance(space, SearchSpace) else load_space(space)
        if the_space.uses_rankings():
            check_cache()  # before the study: an error in its analysis ends in several lines
        display = LiveLeaderboard(console, the_settings.metric, the_settings.trials)
        run = Search(
            job, the_space, the_settings, console=console, command=command, display=display
        )
    except BaseException:
        remove_made(folder, made)  # refused before it began: no empty output folder left
        raise
    try:
        try:
            study = run.run()
        except BaseException as e:
            # A full disk or a lost storage would fail each file too: the next run writes them.
            raise_outage(e)
            # Interrupted (Ctrl-C) or broken after trials ran: still write what they give.
            # Before them (an error in the analysis), "nothing exported" and Optuna's warning
            # of no complete trials only came before the error itself.
            if run.study is not None and run.exports and run.trials_began:
                finish(run, run.study)
            raise
        if not run.exports:
            return SearchResult(run, study, None)  # the first machine's first worker exports
        with deferred():  # a SIGTERM now waits for the bundle, as a scheduler's grace allows
            best, report = finish(run, study)
        return SearchResult(run, study, best, report)
    finally:
        if the_settings.storage is None and (file := study_file(folder)).suffix == ".db":
            settle(file)  # an older SQLite study: one file again


def analyze(
    model: str | Path | ModelSpec | nn.Module | torch.export.ExportedProgram | LoadedModel,
    data: str | Path | DataSpec | TaskData | Dataset,
    *,
    method: str = "shap",
    samples: int = 128,
    background: int = 32,
    nsamples: int = 16,
    seed: int = 0,
    explainer: Explainer = "gradient",
    threads: int = 1,
    cache: bool = True,
) -> Analysis:
    """Rank the model's channels, layers and input features on the data's validation split.

    Args:
        model: As for ``search``.
        data: As for ``search``.
        method: ``shap`` (default), ``taylor``, ``l1`` or ``random``.
        samples: Validation samples explained.
        background: Random unit coalitions that ``shap`` integrates from.
        nsamples: Expected-gradient samples per explained sample.
        seed: Seeds the choice of samples and the coalitions.
        explainer: ``gradient`` (expected gradients, batched) or ``deep`` (shap's DeepExplainer).
        threads: torch threads on CPU.
        cache: Reuse (and store) the result in the cache, keyed by model, data and options.
    """
    job = make_job(model, data)
    options = AnalysisOptions(samples, background, nsamples, seed, explainer)
    configure_threads(torch.device("cpu"), threads)
    return analyze_job(job, method, options, cache=cache)


def make_job(
    model: str | Path | ModelSpec | nn.Module | torch.export.ExportedProgram | LoadedModel,
    data: str | Path | DataSpec | TaskData | Dataset,
) -> Job:
    """Load what is given as a path or spec; check the model and data fit each other.

    ``data`` may also be a torch ``Dataset`` of ``(input, label)`` pairs: its validation split is
    carved out with a fixed seed.
    """
    # Anything else failed deep inside as "'tuple' object has no attribute 'x_train'".
    models = (str, Path, ModelSpec, nn.Module, torch.export.ExportedProgram, LoadedModel)
    if not isinstance(model, models):
        raise ModelLoadError(
            f"model= of type {type(model).__name__!r} is no model: pass a model file path, "
            "'demo', an nn.Module, an ExportedProgram, a ModelSpec or a LoadedModel"
        )
    data = str(data) if isinstance(data, Path) else data  # a path, as model= takes one
    if not isinstance(data, (str, DataSpec, TaskData, Dataset)):
        raise DataError(
            f"data= of type {type(data).__name__!r} is no data: pass a path, 'sklearn:NAME', "
            "'demo', a torch Dataset or a TaskData (autotune.from_tensors(x, y) makes one from "
            "arrays)"
        )
    if isinstance(data, Dataset):
        data = from_datasets(data)
    model_spec = ModelSpec(str(model)) if isinstance(model, (str, Path)) else model
    data_spec = DataSpec(data) if isinstance(data, str) else data
    loaded = model_spec.load() if isinstance(model_spec, ModelSpec) else model_spec
    if not isinstance(loaded, LoadedModel):
        loaded = in_memory(loaded)
    module = loaded.module
    task = data_spec.load(module) if isinstance(data_spec, DataSpec) else data_spec
    return Job.from_objects(
        loaded,
        task,
        model_spec if isinstance(model_spec, ModelSpec) else None,
        data_spec if isinstance(data_spec, DataSpec) else None,
    )


def default_study_name(model: object) -> str:
    """The model file's stem (``demo`` for the demo), else ``autotune``."""
    path = model.path if isinstance(model, ModelSpec) else model
    if isinstance(path, (str, Path)):
        return Path(path).stem or "autotune"
    return "autotune"
