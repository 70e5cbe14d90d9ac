"""One worker's part of a study: the analyses, the baseline, the seed trials, then trials until
the study has as many as asked. What the user sees is a ``Display`` passed in (``results.live``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from torch import nn

from autotune.config import VERSION, SearchSettings
from autotune.errors import AutotuneError, redacted
from autotune.load.anatomy import layers
from autotune.load.job import Job
from autotune.load.streams import Streamed
from autotune.load.tasks import TaskData
from autotune.paths import checkpoints_dir, study_db
from autotune.rank.analysis import Analysis
from autotune.rank.gates import sites
from autotune.search.objective import WORKER, Budgets, Objective, cost_attrs
from autotune.search.prepare import adapt_space, make_maker, run_analyses
from autotune.search.seeds import recipe, seed_configs
from autotune.search.space import SearchSpace
from autotune.search.stages import is_staged, tuning_space
from autotune.search.study import finished_trials, open_study
from autotune.trial.cost import Cost, measure, parse_budget
from autotune.trial.fit import configure_threads, evaluate
from autotune.trial.flips import count_flips, flip_limit, flip_violation, predictions

MAX_FAILS_IN_A_ROW = 5


class Display(Protocol):
    """What a search shows while it runs: the live leaderboard, or nothing."""

    def session(self, study: optuna.Study) -> AbstractContextManager[None]:
        """Shows the display for the duration of the trials."""

    def progress(self, number: int, doing: str) -> None:
        """Trial ``number`` is doing ``doing`` (after each epoch)."""

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Trial ``trial`` ended (completed, pruned or failed)."""


class NoDisplay:
    """Shows nothing (tests, exports)."""

    @contextlib.contextmanager
    def session(self, study: optuna.Study) -> Iterator[None]:
        yield

    def progress(self, number: int, doing: str) -> None:
        pass

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        pass


@dataclass
class Search:
    """One worker's part of a study: runs trials until the study has ``settings.trials``."""

    job: Job
    space: SearchSpace
    settings: SearchSettings
    console: Console = field(default_factory=Console)
    """Where notes and the header go."""
    command: str | None = None
    """The command line that started the search, for the exported config."""
    display: Display = field(default_factory=NoDisplay)

    def __post_init__(self) -> None:
        self.settings = self.settings.resolved(self.space.fit)
        self.space, notes = adapt_space(self.space, self.job)
        for note in notes:
            self.console.print(f"note: {note} of the search")
        self.maker = make_maker(self.job, self.settings)
        self.device = self.maker.device
        module = self.job.model.module
        self.n_layers = len(layers(module))
        self.prunable = (
            tuple(site.layer for site in sites(module, self.maker.example) if site.prunable)
            if self.space.uses_rankings()
            else ()
        )
        self.checkpoints = checkpoints_dir(self.settings.out)
        self.original: Cost | None = None
        self.budgets = Budgets(pareto=self.settings.pareto)
        if self.settings.max_flips is not None:  # checked here, before any long work
            samples = len(self.maker.data.x_val)
            self.budgets.max_flips = flip_limit(self.settings.max_flips, samples)
        self.baseline_value: float | None = None
        self.study: optuna.Study | None = None
        """The study, once opened: what an interrupted search still exports."""
        self.stopped: str | None = None
        """Why this worker stopped the study early (failures in a row), if it did."""

    @property
    def analyses(self) -> dict[str, Analysis]:
        """The rankings the trials read, by method."""
        return self.maker.analyses

    # -- preparing -----------------------------------------------------------------------

    def prepare(self) -> None:
        """Run (or load from the cache) the analyses the space reads, and measure the source."""
        with self.console.status(f"analysis of {len(self.prunable)} layers..."):
            run_analyses(self.job, self.space, self.analyses, self.settings.out, self.console.print)
        module = self.job.model.module.to(self.device)
        self.original = measure(module, self.maker.data.x_val)
        for what in ("params", "macs"):
            budget = getattr(self.settings, f"max_{what}")
            if budget is None and self.settings.pareto != what:
                continue
            if getattr(self.original, what) is None:
                raise AutotuneError(
                    f"{what} of a {self.job.model.format} model cannot be counted, so there is no "
                    f"--max-{what} or --pareto {what} for it: use params"
                )
            if budget is not None:
                limit = parse_budget(budget, getattr(self.original, what), what)
                self.budgets.limits[what] = limit

    # -- the study -----------------------------------------------------------------------

    def open(self) -> optuna.Study:
        """Create the study, or load it when it exists (and check it is the same search)."""
        record = {
            **self.job.describe(),
            "space": self.space.raw,
            "space_source": self.space.source,
            "settings": self.settings.stored(),
            "autotune_version": VERSION,
            "command": None if self.command is None else redacted(self.command),
        }
        return open_study(self.settings, record)

    def add_baseline(self, study: optuna.Study) -> None:
        """Trial 0: the model as it is, evaluated without training.

        Optuna's storages have no "add if absent": two workers starting within the same moment
        can both add one. Evaluating before looking keeps that window to milliseconds, and
        everything that reads the baseline takes the first.
        """
        assert self.original is not None, "prepare() measures the source model"
        model = self.job.model.module.to(self.device)
        data = self.maker.data
        reference = predictions(model, data.x_val)
        start = time.perf_counter()
        val = evaluate(model, data.x_val, data.y_val)
        value = val.metric(self.settings.metric)
        if any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)):
            return
        study.add_trial(
            optuna.trial.create_trial(
                values=[value, *self.budgets.size_objective(self.original)],
                user_attrs={
                    "baseline": True,
                    "val_accuracy": val.accuracy,
                    "val_loss": val.loss,
                    "gain": 0.0,
                    **count_flips(reference, reference, data.y_val, data.classes).attrs(),
                    "trainable_params": 0,
                    **cost_attrs(self.original),
                    "epochs": 0,
                    "seconds": time.perf_counter() - start,
                },
                system_attrs={
                    f"constraints:{k}": v for k, v in self.budgets.violations(self.original).items()
                }
                | self._baseline_flips(),
            )
        )

    def _baseline_flips(self) -> dict[str, float]:
        """The source model's flip constraint: it breaks nothing, so it is within any budget."""
        limit = self.budgets.max_flips
        return {} if limit is None else {"constraints:flips": flip_violation(0, limit)}

    def add_seeds(self, study: optuna.Study) -> None:
        """Enqueue, in a study that has run no trial yet, the standard recipe and then the
        rankings' seed configurations."""
        if finished_trials(study):
            return
        module = self.job.model.module
        dropout = next((m.p for m in module.modules() if isinstance(m, nn.Dropout)), 0.0)
        # A staged search slims in stage 2 only: its first trials seed the tuning.
        first = tuning_space(self.space) if is_staged(self.space) else self.space
        study.enqueue_trial(
            recipe(first, self.n_layers, self.prunable, dropout), skip_if_exists=True
        )
        if not self.settings.seed_trials or not self.analyses:
            return
        for params in seed_configs(first, self.n_layers, self.prunable):
            study.enqueue_trial(params, skip_if_exists=True)

    def objective(self) -> Objective:
        return Objective(
            self.maker,
            self.job,
            self.space,
            self.settings,
            self.budgets,
            self.n_layers,
            self.prunable,
            self.checkpoints,
            self.baseline_value,
            self.display.progress,
            is_staged(self.space),
        )

    def run(self) -> optuna.Study:
        """Run this worker's trials; returns the study."""
        with _optuna_quiet(not self.settings.verbose):
            return self._run()

    def _run(self) -> optuna.Study:
        s = self.settings
        configure_threads(self.device, s.threads)
        study = self.study = self.open()
        self.console.print(self._header(), highlight=False)
        self.prepare()
        self.add_baseline(study)
        self.baseline_value = next(
            (t.values[0] for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline")),
            None,
        )
        self.add_seeds(study)
        remaining = s.trials - finished_trials(study)
        self.fails_in_a_row = 0
        with self.display.session(study):
            if remaining <= 0:
                return study
            callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [
                optuna.study.MaxTrialsCallback(
                    s.trials + 1, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
                ),
                self._after_trial,
            ]
            study.optimize(
                self.objective(),
                n_trials=remaining,
                timeout=s.timeout,
                catch=(Exception,),
                callbacks=callbacks,
            )
        return study

    def _header(self) -> str:
        job, s = self.job, self.settings
        sizes = [len(job.data.x_train), len(job.data.x_val)]
        if job.data.x_test is not None:
            sizes.append(len(job.data.x_test))
        budgets = [f"--max-{k} {getattr(s, f'max_{k}')}" for k in ("params", "macs", "flips")]
        budgets = [b for b in budgets if not b.endswith(" None")]
        storage = redacted(s.storage or str(study_db(s.out)))
        return (
            f"model {job.model.path} ({job.model.format}, {job.num_classes} classes, "
            f"{self.n_layers} layers), data {job.data.spec} "
            f"({'/'.join(map(str, sizes))} train/val{'/test' if len(sizes) == 3 else ''}, "
            f"{_storage(job.data)}), "
            f"device {self.device}, study {s.study_name!r} in {storage}"
            + (f", budgets {' '.join(budgets)}" if budgets else "")
            + (f", Pareto front of {s.metric} vs {s.pareto}" if s.pareto else "")
        )

    def _after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.display.finished(study, trial)
        self.fails_in_a_row = self.fails_in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if self.fails_in_a_row >= MAX_FAILS_IN_A_ROW:
            reason = trial.user_attrs.get("fail_reason", "see the log")
            self.stopped = f"{MAX_FAILS_IN_A_ROW} trials in a row failed (last: {reason})"
            self.console.print(f"[red]{self.stopped}; stopping", highlight=False)
            study.stop()


def _storage(data: TaskData) -> str:
    if isinstance(data.x_train, Streamed):
        return f"streamed from disk by {data.x_train.workers} loader workers"
    return "resident in memory"


@contextlib.contextmanager
def _optuna_quiet(quiet: bool) -> Iterator[None]:
    # Failed trials are shown in the leaderboard with their reason; Optuna's warnings and
    # tracebacks would tear the live display apart.
    if not quiet:
        yield
        return
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


__all__ = ["WORKER", "Display", "NoDisplay", "Search"]
