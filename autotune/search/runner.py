"""One worker's part of a study: the analyses, the baseline, the seed trials, then trials until
the study has as many as asked. What the user sees is a ``Display`` passed in (``results.live``).
With ``--workers N`` the first worker starts the others (``search.pool``) once the analyses are
in the cache, and waits for them: only it exports.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from functools import partial

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from torch import nn

from autotune.config import VERSION, SearchSettings
from autotune.errors import AutotuneError, first_line, redacted
from autotune.interrupts import held
from autotune.load.anatomy import layers
from autotune.load.job import DataSpec, Job, ModelSpec
from autotune.paths import checkpoints_dir, workers_dir
from autotune.rank.analysis import Analysis
from autotune.search.budgets import Budgets, cost_attrs
from autotune.search.display import Display, NoDisplay, header, optuna_quiet, output_console
from autotune.search.objective import WORKER, Objective
from autotune.search.pool import Pool
from autotune.search.prepare import (
    adapt_space,
    make_maker,
    prunable_layers,
    run_analyses,
    study_checkpoints,
)
from autotune.search.record import TrialRecord
from autotune.search.resume_store import ResumeStore, checkpoint_kept
from autotune.search.seeds import recipe, seed_configs
from autotune.search.selection import SELECT
from autotune.search.shared import shared
from autotune.search.size_floor import check_macs_budget, check_params_budget
from autotune.search.space import SearchSpace
from autotune.search.stages import is_staged, judged_trials, tuning_space
from autotune.search.study import (
    LIMITS,
    finished_trials,
    load_study,
    open_study,
    space_of,
    study_record,
)
from autotune.search.trials import (
    enqueue_recipe,
    enqueue_resumes,
    fail_orphans,
    has_baseline,
    machine_index,
    running_elsewhere,
    started,
    within_total,
)
from autotune.trial.cost import Cost, measure
from autotune.trial.fit import configure_threads, evaluate
from autotune.trial.flips import count_flips

MAX_FAILS_IN_A_ROW = 5
POLL_SECONDS = 1.0  # how often a worker looks whether others' trials have ended
BASELINE_WAIT = 600.0  # how long a worker of another machine waits for machine 0's baseline


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
        check_params_budget(self.settings, self.job, self.space, self.console.print)  # first
        self.source_macs = check_macs_budget(self.settings, self.job, self.space)  # and the study
        self.maker = make_maker(self.job, self.settings)
        self.device = self.maker.device
        self.n_layers = len(layers(self.job.model.module))
        self.prunable = prunable_layers(self.job, self.space)
        self.original: Cost | None = None
        self.budgets = Budgets.of(self.settings, len(self.maker.data.x_val))
        self.baseline_value: float | None = None
        self.study: optuna.Study | None = None
        """The study, once opened: what an interrupted search still exports."""
        self.stopped: str | None = None
        """Why this worker stopped the study early (failures in a row), if it did."""
        self.trials_began = False  # before its trials (in the analysis) it has nothing to export
        if self.settings.workers > 1 and None in (self.job.model_spec, self.job.data_spec):
            raise AutotuneError(
                f"--workers {self.settings.workers} needs the model and data as files or specs "
                "(each worker loads them again), not objects passed in memory: use workers=1"
            )

    @property
    def exports(self) -> bool:
        """Whether this process exports: the first worker of the first machine."""
        return self.settings.worker == 0 and machine_index() == 0

    @property
    def threads(self) -> int:
        """This worker's share of ``--threads``."""
        return max(1, self.settings.threads // self.settings.workers)

    @property
    def analyses(self) -> dict[str, Analysis]:
        """The rankings the trials read, by method."""
        return self.maker.analyses

    # -- preparing -----------------------------------------------------------------------

    def prepare(self, study: optuna.Study | None = None) -> None:
        """Run (or load from the cache, or the ``study``: ``search.shared``) the analyses the
        space reads, and measure the source."""
        with self.console.status(f"analysis of {len(self.prunable)} layers..."):
            # One process writes OUT/analysis; the others read the cache it filled. Machines
            # after the first wait for its rankings in the study rather than compute them.
            out = self.settings.out if self.exports else None
            run = partial(
                run_analyses, self.job, self.space, self.analyses, out, self.console.print
            )
            if study is None:
                run()
            else:
                wait = 0.0 if machine_index() == 0 else BASELINE_WAIT
                shared(study, self.job, self.space, run, wait)
        module = self.job.model.module.to(self.device)
        batch, macs = self.budgets.latency_batch, self.source_macs  # macs: counted once
        measured = measure(module, self.maker.data.x_val, batch=batch, macs=macs)
        # The source against itself: the ratio trials are timed by, and the baseline's.
        self.original = dataclasses.replace(measured, latency_ratio=1.0, ratio_spread=0.0)
        self.budgets.resolve(self.settings, self.original)

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
        return open_study(self.settings, record, judged_trials(self.space, self.settings))

    def add_baseline(self, study: optuna.Study) -> None:
        """Trial 0: the model as it is, evaluated without training.

        The exporting worker adds it (others wait a while for it). Optuna has no "add if absent":
        evaluating before looking keeps the window to milliseconds; readers take the first.
        """
        assert self.original is not None, "prepare() measures the source model"
        reference = self.maker.reference  # the source's validation predictions (make_maker)
        assert reference is not None
        waited = 0.0
        while not self.exports and waited < BASELINE_WAIT and not has_baseline(study):
            time.sleep(POLL_SECONDS)
            waited += POLL_SECONDS
        model = self.job.model.module.to(self.device)
        data = self.maker.data
        start = time.perf_counter()
        val = evaluate(model, data.x_val, data.y_val)
        value = val.metric(self.settings.metric)
        if has_baseline(study):
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
                | self.budgets.baseline_flips(),
            )
        )

    def add_seeds(self, study: optuna.Study) -> None:
        """Enqueue the standard recipe unless the study has it (a recipe trial stopped by
        Ctrl-C runs again: ``trials.enqueue_recipe``), then, in a study that has run no trial
        yet, the rankings' seed configurations (the exporting worker only: no two enqueue them)."""
        if not self.exports:
            return
        module = self.job.model.module
        dropout = next((m.p for m in module.modules() if isinstance(m, nn.Dropout)), 0.0)
        # A staged search slims in stage 2 only: its first trials seed the tuning.
        first = tuning_space(self.space) if is_staged(self.space) else self.space
        self.queue_resumes(study)  # before the recipe: a continued recipe trial is the recipe
        enqueue_recipe(study, recipe(first, self.n_layers, self.prunable, dropout))
        if finished_trials(study) or not self.settings.seed_trials or not self.analyses:
            return
        for params in seed_configs(first, self.n_layers, self.prunable):
            study.enqueue_trial(params, skip_if_exists=True)

    def queue_resumes(self, study: optuna.Study) -> None:
        """Queue again the interrupted trials with an in-trial checkpoint: the first worker
        when it starts, and with ``--checkpoint-store`` every worker before each trial, so that
        another machine takes over a trial that one stopped (``search.resume_store``)."""
        folder = checkpoints_dir(self.settings.out, self.settings.study_name)
        kept = checkpoint_kept(study, folder, ResumeStore.of(self.settings))
        for n in enqueue_resumes(study, kept):
            self.console.print(f"note: trial {n} was interrupted; it continues from its checkpoint")

    def objective(self) -> Objective:
        return Objective(
            self.maker,
            self.job,
            self.space,
            self.settings,
            self.budgets,
            self.n_layers,
            self.prunable,
            study_checkpoints(self.settings, self.study),
            self.baseline_value,
            self.display.progress,
            is_staged(self.space),
        )

    def run(self) -> optuna.Study:
        """Run this worker's trials; returns the study."""
        with optuna_quiet(not self.settings.verbose):
            return self._run()

    def _run(self) -> optuna.Study:
        s = self.settings
        configure_threads(self.device, self.threads)
        study = self.study = self.open()
        self.console.print(
            header(self.job, self.settings, self.n_layers, self.device), highlight=False
        )
        self.prepare(study)
        study.set_user_attr(LIMITS, dict(self.budgets.limits))
        study.set_user_attr(SELECT, s.select)
        self.add_baseline(study)
        trials = study.get_trials(deepcopy=False)
        base = (t.values[0] for t in trials if TrialRecord.from_trial(t).baseline)
        self.baseline_value = next(base, None)
        self.add_seeds(study)
        self.fails_in_a_row = 0
        deadline = None if s.timeout is None else time.monotonic() + s.timeout
        objective = self.objective()
        specs = (self.job.model_spec, self.job.data_spec)  # what this command loaded, as it did
        others = [(dataclasses.replace(s, worker=i), *specs) for i in range(1, s.workers)]
        self.trials_began = True
        with self.display.session(study):
            if s.worker == 0 and others:
                workers_dir(s.out).mkdir(parents=True, exist_ok=True)
            with Pool(run_worker, others if s.worker == 0 else []) as pool:
                self._trials(study, objective, deadline)
                codes = pool.join()
            for i, code in enumerate(codes, start=1):
                if code != 0:
                    log = workers_dir(s.out) / f"worker-{i}.log"
                    self.console.print(f"note: worker {i} ended with code {code}; see {log}")
            # A worker that died left a trial to run again.
            self._trials(study, objective, deadline)
        return study

    def _trials(self, study: optuna.Study, objective: Objective, deadline: float | None) -> None:
        """Run trials until the study has its total (and, when exporting, until the other
        workers' trials have ended), the deadline passes or too many fail in a row."""
        total = self.settings.trials
        guarded = within_total(objective, study, total)
        while not self.stopped:
            for number in fail_orphans(study):
                self.console.print(f"note: trial {number}'s worker died; the trial runs again")
            with warnings.catch_warnings():  # heartbeat storages; nothing elsewhere
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            if self.settings.checkpoint_store is not None:
                self.queue_resumes(study)
            if deadline is not None and time.monotonic() >= deadline:
                return
            if started(study) < total:
                with held():  # a Ctrl-C while Optuna starts or ends a trial: once it is recorded
                    study.optimize(guarded, n_trials=1, catch=(Exception,), callbacks=[self._after])
            elif self.exports and running_elsewhere(study):
                time.sleep(POLL_SECONDS)
            else:
                return

    def _after(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if TrialRecord.from_trial(trial).surplus:
            return
        self.display.finished(study, trial)
        self.fails_in_a_row = self.fails_in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if self.fails_in_a_row >= MAX_FAILS_IN_A_ROW:
            reason = TrialRecord.from_trial(trial).fail_reason or "see the log"
            self.stopped = f"{MAX_FAILS_IN_A_ROW} trials in a row failed (last: {reason})"
            self.console.print(f"[red]{self.stopped}; stopping", highlight=False)


def run_worker(settings: SearchSettings, model: ModelSpec, data: DataSpec) -> None:
    """An extra process of ``--workers``: the job its parent loaded (never trust read off the
    study), the space from the study's record, analyses from the cache; what it says goes to
    OUT/workers/worker-N.log."""
    log = workers_dir(settings.out) / f"worker-{settings.worker}.log"
    with log.open("w") as f:
        console = output_console(f)
        try:
            study = load_study(settings.storage, settings.out, settings.study_name)
            record = study_record(study)
            job = Job.load(model, data, record["model"]["sha256"] if model.path != "demo" else None)
            Search(job, space_of(record), settings, console=console).run()
        except KeyboardInterrupt:
            console.print("interrupted")
        except Exception as e:
            console.print(f"error: {first_line(e)}")
            raise SystemExit(1) from None


__all__ = ["WORKER", "Display", "NoDisplay", "Search"]
