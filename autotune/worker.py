"""One worker's part of a study: the analyses, the baseline, the seed trials, then trials until
the study has as many as asked, with the live leaderboard."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.live import Live

from autotune import __version__
from autotune.analysis import Analysis, AnalysisOptions, analyze_job
from autotune.cost import Cost, measure, parse_budget
from autotune.data import TaskData
from autotune.errors import AutotuneError, first_line
from autotune.importance import sites
from autotune.job import Job
from autotune.leaderboard import Leaderboard
from autotune.models import count_parameters
from autotune.pruning import feature_layer
from autotune.report_analysis import plot_analysis
from autotune.seeds import seed_configs
from autotune.space import SearchSpace, TrialConfig
from autotune.structure import Changes, build
from autotune.study import (
    SearchSettings,
    best_trial,
    checkpoint_path,
    finished_trials,
    open_study,
)
from autotune.surgery import can_set_dropout, layers
from autotune.train import (
    METRICS,
    EpochCallback,
    FitResult,
    configure_threads,
    evaluate,
    fine_tune,
    resolve_device,
)

MAX_FAILS_IN_A_ROW = 5
WORKER = f"{socket.gethostname()}:{os.getpid()}"
"""Which process ran a trial, recorded on it (several workers may share one study)."""
_STRUCTURE = ("prune", "prune_layers", "drop_features", "importance", "unfreeze_order")


@dataclass
class Search:
    """One worker's part of a study: runs trials until the study has ``settings.trials``."""

    job: Job
    space: SearchSpace
    settings: SearchSettings
    console: Console = field(default_factory=Console)
    command: str | None = None
    """The command line that started the search, for the exported config."""

    def __post_init__(self) -> None:
        self.settings = self.settings.resolved(self.space)
        module = self.job.model.module
        if not can_set_dropout(module) and "dropout" in self.space.params:
            fmt = self.job.model.format
            why = (
                f"{fmt} models keep their dropout"
                if fmt in ("torchscript", "export")
                else "the model has no Dropout, nor a module around its classifier to add one to"
            )
            self._leave_out(("dropout",), why)
        if self.space.uses_rankings() and self.job.model.format in ("torchscript", "export"):
            self._leave_out(
                _STRUCTURE,
                f"{self.job.model.format} models cannot be analysed, pruned or cut down",
            )
        if self.space.may_be_nonzero("drop_features"):
            reason = self._why_no_feature_dropping()
            if reason:
                self._leave_out(("drop_features",), reason)
        self.device = resolve_device(self.settings.device)
        self.n_layers = len(layers(module))
        self.example = self.job.data.x_val[:2].cpu()
        self.prunable = (
            tuple(s.layer for s in sites(module, self.example) if s.prunable)
            if (self.space.uses_rankings())
            else ()
        )
        self.checkpoints = self.settings.out / "checkpoints"
        self.data = self.job.data.to(self.device)
        self.analyses: dict[str, Analysis] = {}
        self.original: Cost | None = None
        self.limits: dict[str, int] = {}
        self.baseline_value: float | None = None
        self._live: Live | None = None

    def _leave_out(self, names: tuple[str, ...], why: str) -> None:
        present = [n for n in names if n in self.space.params]
        if not present:
            return
        names_ = ", ".join(repr(n) for n in present)
        verb = "is" if len(present) == 1 else "are"
        self.console.print(f"note: {why}; {names_} {verb} left out of the search")
        for name in present:
            self.space = self.space.without(name)

    def _why_no_feature_dropping(self) -> str | None:
        if self.job.data.x_val.ndim != 2:
            return "the input is not a feature vector, so there are no features to drop"
        try:
            feature_layer(self.job.model.module, self.job.data.x_val[:2])
        except ValueError as e:
            return str(e)
        return None

    # -- preparing -----------------------------------------------------------------------

    def prepare(self) -> None:
        """Run (or load from the cache) the analyses the space reads, and measure the source."""
        options = AnalysisOptions(**self.space.analysis)
        for method in self.space.methods():
            if method in self.analyses:
                continue
            started = time.perf_counter()
            with self.console.status(f"{method} analysis of {len(self.prunable)} layers..."):
                analysis = analyze_job(self.job, method, options)
            folder = self.settings.out / "analysis"
            analysis.save(folder / f"{method}.json")
            plot_analysis(analysis, folder)
            how = (
                "cached"
                if analysis.meta.get("cached")
                else (f"{time.perf_counter() - started:.1f}s")
            )
            self.console.print(
                f"{method} analysis: {len(analysis.channels)} prunable layers, "
                f"{analysis.meta.get('errors', 0)} mistakes explained ({how})"
            )
            self.analyses[method] = analysis
        module = self.job.model.module.to(self.device)
        self.original = measure(module, self.data.x_val)
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
                self.limits[what] = parse_budget(budget, getattr(self.original, what), what)

    # -- the study -----------------------------------------------------------------------

    def open(self) -> optuna.Study:
        """Create the study, or load it when it exists (and check it is the same search)."""
        record = {
            **self.job.describe(),
            "space": self.space.raw,
            "space_source": self.space.source,
            "settings": self.settings.stored(),
            "autotune_version": __version__,
            "command": self.command,
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
        start = time.perf_counter()
        val = evaluate(model, self.data.x_val, self.data.y_val)
        value = val.metric(self.settings.metric)
        test = self._test_attrs(model, self.data)
        if any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)):
            return
        study.add_trial(
            optuna.trial.create_trial(
                values=[value, *self._size_objective(self.original)],
                user_attrs={
                    "baseline": True,
                    "val_accuracy": val.accuracy,
                    "val_loss": val.loss,
                    **test,
                    "gain": 0.0,
                    "trainable_params": 0,
                    **self._cost_attrs(self.original),
                    "epochs": 0,
                    "seconds": time.perf_counter() - start,
                },
                system_attrs={
                    f"constraints:{k}": v for k, v in self._violations(self.original).items()
                },
            )
        )

    def add_seeds(self, study: optuna.Study) -> None:
        """Enqueue the rankings' seed configurations in a study that has run no trial yet."""
        if not self.settings.seed_trials or finished_trials(study) or not self.analyses:
            return
        for params in seed_configs(self.space, self.n_layers, self.prunable):
            study.enqueue_trial(params, skip_if_exists=True)

    def run(self) -> optuna.Study:
        """Run this worker's trials with the live leaderboard; returns the study."""
        with _optuna_quiet(not self.settings.verbose):
            return self._run()

    def _run(self) -> optuna.Study:
        s = self.settings
        configure_threads(self.device, s.threads)
        study = self.open()
        self.console.print(self._header(), highlight=False)
        self.prepare()
        self.add_baseline(study)
        self.baseline_value = next(
            (t.values[0] for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline")),
            None,
        )
        self.add_seeds(study)
        remaining = s.trials - finished_trials(study)
        self.board = Leaderboard.from_study(study, s.metric, started=time.time(), planned=s.trials)
        self.fails_in_a_row = 0
        # A terminal or a notebook cell updates the table in place; logs get one line a trial.
        live = self.console.is_terminal or self.console.is_jupyter
        if not live:
            self.console.print(self.board.progress_line())
        if remaining <= 0:
            return study
        callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [
            optuna.study.MaxTrialsCallback(
                s.trials + 1, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            ),
            self._after_trial,
        ]
        with self._display(live):
            study.optimize(
                self.objective, n_trials=remaining, catch=(Exception,), callbacks=callbacks
            )
        return study

    def _header(self) -> str:
        job, s = self.job, self.settings
        sizes = [len(job.data.x_train), len(job.data.x_val)]
        if job.data.x_test is not None:
            sizes.append(len(job.data.x_test))
        budgets = [f"--max-{k} {getattr(s, f'max_{k}')}" for k in ("params", "macs")]
        budgets = [b for b in budgets if not b.endswith(" None")]
        return (
            f"model {job.model.path} ({job.model.format}, {job.num_classes} classes, "
            f"{self.n_layers} layers), data {job.data.spec} "
            f"({'/'.join(map(str, sizes))} train/val{'/test' if len(sizes) == 3 else ''}), "
            f"device {self.device}, study {s.study_name!r} in {s.storage or s.out / 'study.db'}"
            + (f", budgets {' '.join(budgets)}" if budgets else "")
            + (f", Pareto front of {s.metric} vs {s.pareto}" if s.pareto else "")
        )

    @contextlib.contextmanager
    def _display(self, live: bool) -> Iterator[None]:
        if not live:
            yield
            return
        # Transient: the final leaderboard is printed once, after the search, by the caller.
        with Live(
            self.board, console=self.console, refresh_per_second=4, transient=True
        ) as display:
            self._live = display
            yield
        self._live = None

    def _after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.board = Leaderboard.from_study(
            study, self.settings.metric, started=self.board.started, planned=self.settings.trials
        )
        if self._live is not None:
            self._live.update(self.board)
        else:
            row = next(r for r in self.board.rows if r.number == trial.number)
            self.console.print(self.board.plain_line(row), highlight=False, soft_wrap=True)
        self.fails_in_a_row = self.fails_in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if self.fails_in_a_row >= MAX_FAILS_IN_A_ROW:
            reason = trial.user_attrs.get("fail_reason", "see the log")
            self.console.print(
                f"[red]{MAX_FAILS_IN_A_ROW} trials in a row failed; stopping. Last reason: {reason}"
            )
            study.stop()

    # -- one trial -----------------------------------------------------------------------

    def build(self, config: TrialConfig) -> tuple[torch.nn.Module, Changes, TaskData]:
        """The trial's model before training, on the device, and the data it takes."""
        model, changes = build(self.job.model.module, config, self.analyses, self.example)
        data = self.data if changes.features is None else self.data.columns(changes.features)
        return model.to(self.device), changes, data

    def fit(
        self,
        model: torch.nn.Module,
        config: TrialConfig,
        number: int,
        data: TaskData | None = None,
        on_epoch: EpochCallback | None = None,
    ) -> FitResult:
        s = self.settings
        assert s.max_epochs is not None and s.patience is not None
        return fine_tune(
            model,
            self.data if data is None else data,
            config,
            max_epochs=s.max_epochs,
            patience=s.patience,
            metric=s.metric,
            seed=s.seed + number,
            on_epoch=on_epoch,
        )

    def objective(self, trial: optuna.Trial) -> float | tuple[float, float]:
        try:
            trial.set_user_attr("worker", WORKER)
            config = self.space.suggest(trial, self.n_layers, self.prunable)
            model, changes, data = self.build(config)
            cost = measure(model, data.x_val)
            trainable, _ = count_parameters(model)
            trial.set_user_attr("trainable_params", trainable)
            for key, value in self._cost_attrs(cost).items():
                trial.set_user_attr(key, value)
            if changes.features is not None:
                trial.set_user_attr("features_kept", len(changes.features))
            started = time.perf_counter()
            over = self._violations(cost)
            for key, value in over.items():
                trial.set_constraint(key, value)
            exceeded = [k for k, v in over.items() if v > 0]
            if exceeded:
                # Over budget: no point training it. The sampler learns from the constraint.
                what = ", ".join(f"{k} {getattr(cost, k):,} > {self.limits[k]:,}" for k in exceeded)
                trial.set_user_attr("stop_reason", f"over budget: {what}")
                raise optuna.TrialPruned()

            def on_epoch(epoch: int, value: float) -> None:
                self.board.running[trial.number] = (
                    f"epoch {epoch}, {self.settings.metric} {value:.4f}"
                )
                if self.settings.pareto:
                    return  # multi-objective trials are not pruned: early stopping only
                trial.report(value, epoch)
                if trial.should_prune():
                    trial.set_user_attr("epochs", epoch)
                    trial.set_user_attr("seconds", time.perf_counter() - started)
                    trial.set_user_attr("stop_reason", f"pruned after epoch {epoch}")
                    raise optuna.TrialPruned()

            result = self.fit(model, config, trial.number, data, on_epoch)
            # The best epoch's scores are those of the weights the model now holds.
            best_epoch = result.history[result.best_epoch - 1]
            trial.set_user_attr("epochs", result.epochs_run)
            trial.set_user_attr("best_epoch", result.best_epoch)
            trial.set_user_attr("seconds", result.seconds)
            trial.set_user_attr("stop_reason", result.stop_reason)
            trial.set_user_attr("val_accuracy", best_epoch["val_accuracy"])
            trial.set_user_attr("val_loss", best_epoch["val_loss"])
            for key, value in self._test_attrs(model, data).items():
                trial.set_user_attr(key, value)
            if self.baseline_value is not None:
                sign = 1.0 if METRICS[self.settings.metric] == "maximize" else -1.0
                trial.set_user_attr("gain", sign * (result.best - self.baseline_value))
            trial.set_user_attr("history", result.history)
            self._keep_if_best(trial, result.best, model, cost)
            size = self._size_objective(cost)
            return (result.best, size[0]) if size else result.best
        except optuna.TrialPruned:
            raise
        except Exception as e:
            trial.set_user_attr("fail_reason", _one_line(e))
            raise
        finally:
            self.board.running.pop(trial.number, None)

    def _test_attrs(self, model: torch.nn.Module, data: TaskData) -> dict[str, Any]:
        """Held-out scores, for the record and the dashboard: never used to pick a trial."""
        if data.x_test is None or data.y_test is None:
            return {}
        test = evaluate(model, data.x_test, data.y_test)
        return {"test_accuracy": test.accuracy, "test_loss": test.loss}

    def _cost_attrs(self, cost: Cost) -> dict[str, Any]:
        return {
            "total_params": cost.params,
            "macs": cost.macs,
            "latency_ms": round(cost.latency_ms, 3),
        }

    def _violations(self, cost: Cost) -> dict[str, float]:
        """Constraint values: positive is over budget (by that fraction of the budget)."""
        return {k: getattr(cost, k) / limit - 1.0 for k, limit in self.limits.items()}

    def _size_objective(self, cost: Cost) -> list[float]:
        return [float(getattr(cost, self.settings.pareto))] if self.settings.pareto else []

    def _keep_if_best(
        self, trial: optuna.Trial, value: float, model: torch.nn.Module, cost: Cost
    ) -> None:
        """Save the weights of a trial that may be exported, so export need not retrain."""
        study = trial.study
        if self.settings.pareto:
            keep = True  # any trial may join the front; the rest are deleted at the end
        else:
            best = best_trial(study)
            feasible = all(v <= 0 for v in self._violations(cost).values())
            improves = best is None or (
                value > best.values[0]
                if study.direction == optuna.study.StudyDirection.MAXIMIZE
                else value < best.values[0]
            )
            keep = feasible and improves
        if keep:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            torch.save(state, checkpoint_path(self.checkpoints, trial.number))


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


def _one_line(e: BaseException) -> str:
    message = first_line(e)
    return message if isinstance(e, AutotuneError) else f"{type(e).__name__}: {message}"
