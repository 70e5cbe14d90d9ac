"""The objective: one Optuna trial, from sampled parameters to a scored, recorded model.

Sample a configuration, build the slimmed copy, measure it against the budgets (a slimming
trial over a size budget is first raised to fit it, ``search.fit_budget``; one still over is
pruned before training), fine-tune it while reporting every epoch to the pruner, record
what it achieved on the trial, and keep its weights when it may be exported.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial
from torch import nn

from autotune.config import SearchSettings, TrialConfig, score_key, sign
from autotune.errors import TrialFailed, described
from autotune.load.anatomy import count_parameters
from autotune.load.job import Job
from autotune.load.tasks import TaskData
from autotune.paths import out_of_space, resume_path
from autotune.search.budgets import Budgets, cost_attrs
from autotune.search.fit_budget import fit_to_budget
from autotune.search.record import TrialRecord, record
from autotune.search.resume_store import ResumeStore, discard
from autotune.search.selection import may_be_chosen
from autotune.search.space import SearchSpace
from autotune.search.stages import (
    HalfTime,
    OutOfReach,
    child_config,
    near_copy,
    parent_of,
    slimming_maker,
    slimming_space,
    stage_of,
    stage_two_params,
    suggest_lr_scale,
    tuning_space,
)
from autotune.search.study import best_trial, config_of, rank_key
from autotune.search.trials import WORKER, continued
from autotune.trial.accel import release
from autotune.trial.checkpoints import Checkpoints
from autotune.trial.cost import Cost
from autotune.trial.fit import EpochCallback, FitResult
from autotune.trial.flips import Flips, count_flips, flip_violation, predictions
from autotune.trial.maker import TrialMaker
from autotune.trial.resume import Resume

Progress = Callable[[int, str], None]
"""Told (trial number, what it is doing) after every epoch: the live display listens."""


@dataclass
class Objective:
    """``study.optimize``'s function: runs one trial and returns its value(s)."""

    maker: TrialMaker
    job: Job
    space: SearchSpace
    settings: SearchSettings
    budgets: Budgets
    n_layers: int
    prunable: tuple[str, ...]
    checkpoints: Checkpoints
    baseline_value: float | None = None
    progress: Progress | None = None
    staged: bool = False
    """Tune on the full model first, then slim the best of it (``search.stages``)."""
    _slimmers: dict[int, TrialMaker] = field(default_factory=dict)
    """Stage-2 makers by parent trial: the adapted model and its rankings, built once."""
    _switch: HalfTime | None = None
    """When half of ``--timeout`` moves the trials into stage 2; made at the first trial."""

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        ended = False  # completed, pruned or failed: no in-trial checkpoint is continued
        try:
            value = self._run(trial)
            ended = True
            return value
        except optuna.TrialPruned:
            ended = True
            raise
        except KeyboardInterrupt:
            # Stopped, not failed: it does not count toward --trials (``search.trials``), and
            # its in-trial checkpoint stays for the next run to continue from.
            record(trial, interrupted=True)
            raise
        except Exception as e:
            ended = True
            record(trial, fail_reason=described(e))
            raise
        finally:
            if ended:
                discard(self.checkpoints.folder, ResumeStore.of(self.settings), continued(trial))
            left = release(self.maker.device)
            if left is not None:  # GPU memory must not grow from trial to trial
                record(trial, cuda_memory_mb=round(left, 1))

    def _run(self, trial: optuna.Trial) -> float | tuple[float, float]:
        stage, parent = self._stage(trial)
        staged = {"stage": stage if self.staged else 0}
        if parent is not None:
            staged["parent"] = parent.number
        # First, in one write: whether the trial's process lives is read off ``worker``.
        record(trial, worker=WORKER, **staged)
        config, maker = self._configure(trial, parent)
        tuning = self.staged and stage == 1
        model, changes, data = maker.build(config)
        if not tuning and not TrialRecord.from_trial(trial).recipe:
            # The over-budget build is not kept: on a GPU it would stay beside the one trained.
            limits = self.budgets.limits
            config, (model, changes, data), fitted = fit_to_budget(
                config, (model, changes, data), self.space, limits, maker.build
            )
            if fitted:
                record(trial, fitted=fitted)
        cost = self.budgets.measure(model, data.x_val, (self.maker.source, self.maker.data.x_val))
        trainable, _ = count_parameters(model)
        built = {"trainable_params": trainable, **cost_attrs(cost), **changes.kept()}
        built["precision"] = maker.accel(model).describe()
        record(trial, config=dataclasses.asdict(config), **built)
        started = time.perf_counter()
        over = self.budgets.violations(cost)
        # Stage 1 trains full-size models whatever the budget (stage 2 slims the best), and does
        # not record it: TPE ranks infeasible trials by how far over (here all alike), not value.
        for key, value in ({} if tuning else over).items():
            trial.set_constraint(key, value)
        if any(v > 0 for v in over.values()) and not tuning:
            # Over budget: no point training it. The sampler learns from the constraint.
            untrained: str | None = f"over budget: {self.budgets.over(cost)}"
        else:
            untrained = None if parent is None else near_copy(cost.params, parent, self.settings)
        if untrained is not None:
            record(trial, stop_reason=untrained)
            raise optuna.TrialPruned()
        metric = self.settings.metric
        resume = self._resume(trial, config, parent)
        reach = OutOfReach.of(trial.study, self.settings) if stage == 2 else None

        def on_epoch(epoch: int, value: float) -> None:
            if self.progress is not None:
                self.progress(
                    trial.number, f"epoch {epoch}/{maker.max_epochs}, {metric} {value:.4f}"
                )
            if self.settings.pareto:
                return  # multi-objective trials are not pruned: early stopping only
            trial.report(value, epoch)
            # Stage 1 is judged by the study's pruner, stage 2 against the export's band.
            out = reach is not None and reach.stops(epoch, value)
            if resume is not None and epoch <= resume.resumed_after:
                return  # told again after an interruption: the pruner let it pass then
            if out or (reach is None and trial.should_prune()):
                why = reach.why(epoch) if out and reach else f"pruned after epoch {epoch}"
                record(trial, epochs=epoch, seconds=time.perf_counter() - started, stop_reason=why)
                raise optuna.TrialPruned()

        try:
            # The seed of the trial it runs again, if it does: a retrain for the export (of
            # this trial, or of a stage-2 child's parent) gives the weights it ends with.
            result = maker.fit(model, config, continued(trial), data, on_epoch, resume)
        except torch.cuda.OutOfMemoryError:
            # Once, at half the batch: the trial keeps its place and its other parameters.
            config, model, result = self._retry_smaller(trial, config, maker, on_epoch)
        # The best epoch's scores are those of the weights the model now holds.
        best_epoch = result.history[result.best_epoch - 1]
        done: dict[str, Any] = {
            "epochs": result.epochs_run,
            "best_epoch": result.best_epoch,
            "seconds": result.seconds,
            "stop_reason": result.stop_reason,
            "val_accuracy": best_epoch["val_accuracy"],
            "val_loss": best_epoch["val_loss"],
            "history": result.history,
        }
        if resume is not None and resume.resumed_after:
            done["resumed_after"] = resume.resumed_after
        if result.wait_seconds:  # streamed data: the share of training spent waiting for it
            done["loader_wait"] = result.wait_seconds / result.train_seconds
        if self.baseline_value is not None:
            done["gain"] = sign(metric) * (result.best - self.baseline_value)
        flips = self._count_flips(trial, model, data, done)
        record(trial, **done)
        scores = score_key(metric, best_epoch["val_accuracy"], best_epoch["val_loss"])
        self._keep_if_best(trial, scores, model, cost, stage, flips)
        size = self.budgets.size_objective(cost, flips)
        return (result.best, size[0]) if size else result.best

    def _count_flips(
        self, trial: optuna.Trial, model: nn.Module, data: TaskData, done: dict[str, Any]
    ) -> Flips | None:
        """Count the errors the trial fixed and broke against the source model (into ``done``,
        the fields to record), and hold it to the flip budget: over it, the trial completes but
        is infeasible (never exported)."""
        reference = self.maker.reference
        if reference is None:
            return None
        flips = count_flips(reference, predictions(model, data.x_val), data.y_val, data.classes)
        done.update(flips.attrs())
        limit = self.budgets.max_flips
        if limit is not None:
            trial.set_constraint("flips", flip_violation(flips.broken, limit))
            if flips.broken > limit:
                done["stop_reason"] = f"over budget: flips {flips.broken} > {limit}"
        return flips

    def _retry_smaller(
        self, trial: optuna.Trial, config: TrialConfig, maker: TrialMaker, on_epoch: EpochCallback
    ) -> tuple[TrialConfig, nn.Module, FitResult]:
        """Fit ``config`` again at half its batch size after running out of GPU memory."""
        if config.batch_size < 2:
            raise TrialFailed("out of GPU memory at batch size 1: the model does not fit")
        release(maker.device)
        smaller = dataclasses.replace(config, batch_size=config.batch_size // 2)
        oom = (
            f"out of GPU memory at batch size {config.batch_size}: retried at {smaller.batch_size}"
        )
        record(trial, oom=oom, config=dataclasses.asdict(smaller))
        model, _, data = maker.build(smaller)
        try:
            return smaller, model, maker.fit(model, smaller, continued(trial), data, on_epoch)
        except torch.cuda.OutOfMemoryError as e:
            raise TrialFailed(
                f"out of GPU memory at batch size {smaller.batch_size} too: lower batch_size "
                "in the space or slim the model"
            ) from e

    def _resume(
        self, trial: optuna.Trial, config: TrialConfig, parent: FrozenTrial | None
    ) -> Resume | None:
        """The trial's in-trial checkpoint: written every ``--checkpoint-every`` minutes, and
        continued from whenever one is there (a run without the option continues it too)."""
        folder, every = self.checkpoints.folder, self.settings.checkpoint_every
        if folder is None:
            return None
        first = continued(trial)
        # When the first run of the trial started: a file left by a study since deleted, whose
        # trial had the same number and configuration, is not this one's. Not the seed: the
        # random generators' states are in the file, whatever the number.
        started = trial if first == trial.number else trial.study.get_trials(deepcopy=False)[first]
        identity: dict[str, Any] = {"config": dataclasses.asdict(config), "trial": first}
        identity |= {"started": str(started.datetime_start), "metric": self.settings.metric}
        identity["parent"] = None if parent is None else parent.number
        path = resume_path(folder, first)
        copies = ResumeStore.of(self.settings)
        shared = None if copies is None else copies.of_trial(trial)
        return Resume(path, math.inf if every is None else every * 60, identity, shared=shared)

    def _stage(self, trial: optuna.Trial) -> tuple[int, FrozenTrial | None]:
        """The trial's stage, and in stage 2 its parent: the trial whose model it slims."""
        resumes = TrialRecord.from_trial(trial).resumes
        if resumes is not None:  # those of the trial it continues, whatever its own number
            trials = trial.study.get_trials(deepcopy=False)
            was = TrialRecord.from_trial(trials[resumes])
            return (
                (2, trials[was.parent]) if was.stage == 2 and was.parent is not None else (1, None)
            )
        if self._switch is None:
            self._switch = HalfTime(self.settings.timeout if self.staged else None)
        stage = stage_of(trial.number, self.settings, self.staged, self._switch.first(trial))
        if TrialRecord.from_trial(trial).recipe:  # run again under a later number, still it
            stage = 1
        parent = parent_of(trial.study, self.settings.metric) if stage == 2 else None
        # No stage-1 trial has completed yet: tune rather than slim.
        return (1, None) if parent is None else (2, parent)

    def _configure(
        self, trial: optuna.Trial, parent: FrozenTrial | None
    ) -> tuple[TrialConfig, TrialMaker]:
        """The trial's configuration and the maker that builds it (``parent``: stage 2's)."""
        if parent is None:  # unstaged, or stage 1
            space = tuning_space(self.space) if self.staged else self.space
            return space.suggest(trial, self.n_layers, self.prunable), self.maker
        slim = slimming_space(self.space).suggest(trial, self.n_layers, self.prunable)
        tuned = config_of(parent, self.space)
        sampled = stage_two_params(self.space)
        child = child_config(tuned, slim, sampled, suggest_lr_scale(trial, self.space))
        return child, self._slimmer(parent, tuned)

    def _slimmer(self, parent: FrozenTrial, tuned: TrialConfig) -> TrialMaker:
        """The maker of ``parent``'s children: its trained model and that model's rankings."""
        number = parent.number
        if number not in self._slimmers:
            checkpoints, seeded = self.checkpoints, continued(parent)
            adapted, *_ = self.maker.trained(tuned, number, checkpoints, seeded)
            maker = slimming_maker(self.maker, adapted, self.job, slimming_space(self.space))
            self._slimmers[number] = maker
        return self._slimmers[number]

    def _keep_if_best(
        self,
        trial: optuna.Trial,
        scores: tuple[float, float],
        model: nn.Module,
        cost: Cost,
        stage: int,
        flips: Flips | None = None,
    ) -> None:
        """Save the weights of a trial that may be exported (or slimmed in stage 2), so that
        neither needs to retrain it. ``scores``: its ``config.score_key``."""
        s = sign(self.settings.metric)
        if self.settings.pareto:
            keep = True  # any trial may join the front; the rest are deleted at the end
        elif self.staged and stage == 1:
            parent = parent_of(trial.study, self.settings.metric)
            keep = parent is None or scores > rank_key(parent, s)[:2]
        else:
            best = best_trial(trial.study)
            improves = best is None or scores > rank_key(best, s)[:2]
            within = self.budgets.max_flips is None or (
                flips is not None and flips.broken <= self.budgets.max_flips
            )
            # The one-standard-error rule may export a smaller trial than the best: keep it.
            pick = improves or may_be_chosen(trial.study, scores[0], cost.params)
            keep = self.budgets.feasible(cost) and within and pick
        if not keep:
            return
        try:
            self.checkpoints.save(model, trial.number)
        except OSError as e:
            # The trial's result stands without its weights: the export, or a stage-2 child,
            # retrains it from its parameters and seed. Failing it would spend the study's
            # trials on a full disk; a storage on that disk ends the search at its next write.
            if not out_of_space(e):
                raise
