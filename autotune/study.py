"""The Optuna study: storage, sampler, pruner, the baseline trial, and the trials themselves."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.live import Live

from autotune import __version__
from autotune.errors import AutotuneError, StorageError, first_line
from autotune.job import Job
from autotune.leaderboard import Leaderboard
from autotune.models import count_parameters
from autotune.space import SearchSpace, TrialConfig, config_from, parse_space
from autotune.surgery import apply, can_set_dropout, layers
from autotune.train import (
    METRICS,
    EpochCallback,
    FitResult,
    configure_threads,
    evaluate,
    fine_tune,
    resolve_device,
)

PRUNERS = ("median", "hyperband", "none")
ATTR = "autotune"  # study user attribute holding the job, space and settings
MAX_FAILS_IN_A_ROW = 5


@dataclass
class SearchSettings:
    """How a search runs; the search space says what it samples."""

    trials: int = 20
    """Trials in the study, the baseline not counted: a re-run only runs the missing ones."""
    max_epochs: int | None = None
    """Epochs per trial at most (default: the space's ``fit.max_epochs``, else 20)."""
    patience: int | None = None
    """Epochs without improvement before a trial stops (default: the space's, else 5)."""
    metric: str = "accuracy"
    """``accuracy`` (maximised) or ``loss`` (validation cross-entropy, minimised)."""
    seed: int = 0
    """Seeds the sampler and each trial (trial N trains with seed + N)."""
    pruner: str = "median"
    device: str = "auto"
    threads: int = 1
    """torch intra-op threads on CPU (see ``train.configure_threads``)."""
    study_name: str = "autotune"
    storage: str | None = None
    """Optuna storage URL or journal file; default: SQLite in the output folder."""
    out: Path = field(default_factory=lambda: Path("runs/autotune"))
    verbose: bool = False
    """Keep Optuna's own log lines (they interleave with the live leaderboard)."""

    def resolved(self, space: SearchSpace) -> SearchSettings:
        max_epochs = self.max_epochs or space.fit.get("max_epochs", 20)
        patience = self.patience or space.fit.get("patience", 5)
        if self.trials < 0:
            raise AutotuneError(f"--trials must be >= 0, got {self.trials}")
        if self.metric not in METRICS:
            raise AutotuneError(f"--metric must be one of {list(METRICS)}, got {self.metric!r}")
        if self.pruner not in PRUNERS:
            raise AutotuneError(f"--pruner must be one of {list(PRUNERS)}, got {self.pruner!r}")
        if max_epochs < 1 or patience < 1:
            raise AutotuneError(f"epochs and patience must be >= 1, got {max_epochs}, {patience}")
        return dataclasses.replace(
            self, max_epochs=max_epochs, patience=patience, out=Path(self.out)
        )

    def stored(self) -> dict[str, Any]:
        keep = ("max_epochs", "patience", "metric", "seed", "threads")
        return {k: getattr(self, k) for k in keep}


def open_storage(url: str | None, out: Path) -> BaseStorage | str:
    """An Optuna storage: SQLite in ``out`` by default, any RDB URL, or a journal file."""
    if url is None:
        out.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{out / 'study.db'}"
    try:
        if "://" not in url:
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            Path(url).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(url))
        engine_kwargs: dict[str, Any] = {}
        if url.startswith(("postgresql", "mysql")):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
        # Heartbeats let a restarted worker fail and retry the trials of one that died.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=60,
                grace_period=180,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
    except Exception as e:
        reason = first_line(e)
        raise StorageError(
            f"cannot open storage {url!r}: {reason}. Check the URL (sqlite:///path, "
            "postgresql://user@host/db, or a journal file path), that the server is running, and "
            "that its driver is installed"
        ) from e


def load_study(storage: str | None, out: Path, study_name: str | None = None) -> optuna.Study:
    """An existing study from ``storage`` (default: the SQLite file in ``out``)."""
    if storage is None and not (out / "study.db").is_file():
        raise StorageError(
            f"no study in {str(out)!r}: there is no {str(out / 'study.db')!r}; pass the output "
            "folder of a search, or --storage"
        )
    opened = open_storage(storage, out)
    names = optuna.study.get_all_study_names(opened)
    if study_name is None:
        if len(names) != 1:
            raise StorageError(f"the storage holds studies {names}: choose one with --study-name")
        study_name = names[0]
    elif study_name not in names:
        raise StorageError(f"the storage has no study {study_name!r}; it holds {names}")
    return optuna.load_study(study_name=study_name, storage=opened)


def study_record(study: optuna.Study) -> dict[str, Any]:
    record = study.user_attrs.get(ATTR)
    if record is None:
        raise StorageError(
            f"study {study.study_name!r} was not made by autotune (it has no {ATTR!r} attribute)"
        )
    return dict(record)


def make_sampler_and_pruner(
    settings: SearchSettings,
) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
    # TPE needs some random trials to model from; a short study should not spend them all.
    startup = max(3, min(10, settings.trials // 3))
    sampler = optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=startup)
    pruner: optuna.pruners.BasePruner
    if settings.pruner == "median":
        # Fine-tuning curves start slowly: judge a trial only after a quarter of its epochs.
        warmup = max(2, (settings.max_epochs or 20) // 4)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    elif settings.pruner == "hyperband":
        assert settings.max_epochs is not None
        pruner = optuna.pruners.HyperbandPruner(min_resource=2, max_resource=settings.max_epochs)
    else:
        pruner = optuna.pruners.NopPruner()
    return sampler, pruner


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
        if not can_set_dropout(self.job.model.module) and "dropout" in self.space.params:
            self.console.print(
                f"note: {self.job.model.format} models keep their dropout as it is; "
                "'dropout' is left out of the search"
            )
            self.space = self.space.without("dropout")
        self.device = resolve_device(self.settings.device)
        self.n_layers = len(layers(self.job.model.module))
        self.checkpoints = self.settings.out / "checkpoints"
        self.data = self.job.data.to(self.device)
        self._live: Live | None = None

    def open(self) -> optuna.Study:
        """Create the study, or load it when it exists (and check it is the same search)."""
        s = self.settings
        storage = open_storage(s.storage, s.out)
        sampler, pruner = make_sampler_and_pruner(s)
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=s.study_name,
                direction=METRICS[s.metric],
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
        except Exception as e:
            raise StorageError(f"cannot create study {s.study_name!r} in the storage: {e}") from e
        record = {
            **self.job.describe(),
            "space": self.space.raw,
            "space_source": self.space.source,
            "settings": s.stored(),
            "autotune_version": __version__,
            "command": self.command,
        }
        previous = study.user_attrs.get(ATTR)
        if previous is None:
            study.set_user_attr(ATTR, record)
        else:
            self._check_same(study, previous, record)
        return study

    def _check_same(self, study: optuna.Study, old: dict[str, Any], new: dict[str, Any]) -> None:
        checks = [
            ("model", old["model"]["sha256"], new["model"]["sha256"]),
            ("data", old["data"]["fingerprint"], new["data"]["fingerprint"]),
            ("metric", old["settings"]["metric"], new["settings"]["metric"]),
            ("search space", old["space"], new["space"]),
        ]
        for what, before, now in checks:
            if before != now:
                raise StorageError(
                    f"study {study.study_name!r} already holds a search with another {what}: "
                    "re-run with the same settings to continue it, or choose a new --study-name "
                    "or --out to start another"
                )

    def add_baseline(self, study: optuna.Study) -> None:
        """Trial 0: the model as it is, evaluated without training."""
        if any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)):
            return
        model = self.job.model.module.to(self.device)
        start = time.perf_counter()
        val = evaluate(model, self.data.x_val, self.data.y_val)
        _, total = count_parameters(model)
        study.add_trial(
            optuna.trial.create_trial(
                value=val.metric(self.settings.metric),
                user_attrs={
                    "baseline": True,
                    "val_accuracy": val.accuracy,
                    "val_loss": val.loss,
                    "trainable_params": 0,
                    "total_params": total,
                    "epochs": 0,
                    "seconds": time.perf_counter() - start,
                },
            )
        )

    def finished_trials(self, study: optuna.Study) -> int:
        done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return sum(
            1
            for t in study.get_trials(deepcopy=False, states=done)
            if not t.user_attrs.get("baseline")
        )

    def run(self) -> optuna.Study:
        """Run this worker's trials with the live leaderboard; returns the study."""
        with _optuna_quiet(not self.settings.verbose):
            return self._run()

    def _run(self) -> optuna.Study:
        s = self.settings
        configure_threads(self.device, s.threads)
        study = self.open()
        self.console.print(self._header(), highlight=False)
        self.add_baseline(study)
        remaining = s.trials - self.finished_trials(study)
        self.board = Leaderboard.from_study(study, s.metric, started=time.time(), planned=s.trials)
        self.fails_in_a_row = 0
        live = self.console.is_terminal
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
        return (
            f"model {job.model.path} ({job.model.format}, {job.num_classes} classes, "
            f"{self.n_layers} layers), data {job.data.spec} "
            f"({'/'.join(map(str, sizes))} train/val{'/test' if len(sizes) == 3 else ''}), "
            f"device {self.device}, study {s.study_name!r} in {s.storage or s.out / 'study.db'}"
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

    def build(self, config: TrialConfig) -> torch.nn.Module:
        """The trial's model before training: copied, changed by ``config``, on the device."""
        model = apply(self.job.model.module, config)
        return model.to(self.device)

    def fit(
        self,
        model: torch.nn.Module,
        config: TrialConfig,
        number: int,
        on_epoch: EpochCallback | None = None,
    ) -> FitResult:
        s = self.settings
        assert s.max_epochs is not None and s.patience is not None
        return fine_tune(
            model,
            self.data,
            config,
            max_epochs=s.max_epochs,
            patience=s.patience,
            metric=s.metric,
            seed=s.seed + number,
            on_epoch=on_epoch,
        )

    def objective(self, trial: optuna.Trial) -> float:
        try:
            config = self.space.suggest(trial, self.n_layers)
            model = self.build(config)
            trainable, total = count_parameters(model)
            trial.set_user_attr("trainable_params", trainable)
            trial.set_user_attr("total_params", total)
            started = time.perf_counter()

            def on_epoch(epoch: int, value: float) -> None:
                trial.report(value, epoch)
                self.board.running[trial.number] = (
                    f"epoch {epoch}, {self.settings.metric} {value:.4f}"
                )
                if trial.should_prune():
                    trial.set_user_attr("epochs", epoch)
                    trial.set_user_attr("seconds", time.perf_counter() - started)
                    trial.set_user_attr("stop_reason", f"pruned after epoch {epoch}")
                    raise optuna.TrialPruned()

            result = self.fit(model, config, trial.number, on_epoch)
            # The best epoch's scores are those of the weights the model now holds.
            best_epoch = result.history[result.best_epoch - 1]
            trial.set_user_attr("epochs", result.epochs_run)
            trial.set_user_attr("best_epoch", result.best_epoch)
            trial.set_user_attr("seconds", result.seconds)
            trial.set_user_attr("stop_reason", result.stop_reason)
            trial.set_user_attr("val_accuracy", best_epoch["val_accuracy"])
            trial.set_user_attr("val_loss", best_epoch["val_loss"])
            trial.set_user_attr("history", result.history)
            self._keep_if_best(trial, result.best, model)
            return result.best
        except optuna.TrialPruned:
            raise
        except Exception as e:
            trial.set_user_attr("fail_reason", _one_line(e))
            raise
        finally:
            self.board.running.pop(trial.number, None)

    def _keep_if_best(self, trial: optuna.Trial, value: float, model: torch.nn.Module) -> None:
        """Save the weights of a trial that beats every finished one, so export need not retrain."""
        study = trial.study
        try:
            best = study.best_value
        except ValueError:
            best = None
        improves = best is None or (
            value > best
            if study.direction == optuna.study.StudyDirection.MAXIMIZE
            else value < best
        )
        if improves:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            torch.save(state, checkpoint_path(self.checkpoints, trial.number))


def checkpoint_path(folder: Path, number: int) -> Path:
    return folder / f"trial_{number:04d}.pt"


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete the checkpoints of trials other than ``keep``."""
    if not folder.is_dir():
        return
    for path in folder.glob("trial_*.pt"):
        if path != checkpoint_path(folder, keep):
            path.unlink(missing_ok=True)
    if not any(folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)


def space_of(record: dict[str, Any]) -> SearchSpace:
    return parse_space(record["space"], record.get("space_source", "<study>"))


def config_of(trial: FrozenTrial, space: SearchSpace) -> TrialConfig:
    """The full configuration of a stored trial: its sampled values over the space's fixed ones."""
    return config_from({**space.fixed_values(), **trial.params})


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
