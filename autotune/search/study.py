"""The Optuna study: settings, storage, sampler and pruner, the stored record."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.config import (
    METRICS,
    SearchSettings,
    TrialConfig,
    metric_of_direction,
    score_key,
    sign,
)
from autotune.errors import StorageError, first_line, redacted
from autotune.interrupts import held, hold_in_calls
from autotune.paths import check_storage, study_file
from autotune.search.optuna_internals import storage_of
from autotune.search.record import TrialRecord
from autotune.search.space import SearchSpace, config_from, parse_space
from autotune.search.storage import (
    holds_optuna_tables,
    local_file,
    open_storage,
    server_holds_optuna_tables,
    sqlite_file,
)
from autotune.search.study_file import write_ahead
from autotune.search.trials import finished, machine_index

ATTR = "autotune"  # study user attribute holding the job, space and settings
LIMITS = "autotune_limits"
"""Study user attribute: the budgets in absolute counts, as the latest run resolved them."""
CHOSEN = "autotune_chosen"
"""Study user attribute: the finalists' scores over fresh seeds and the trial chosen from them
(``results.finalists``); the export reads it."""
UNCHECKED = ("threads",)
"""Stored settings a re-run may change freely: they do not change what a trial achieves."""
FLAGS = {"max_epochs": "--epochs", "seed": "--seed", "patience": "--patience"}


def open_study(
    settings: SearchSettings, record: dict[str, Any], judged: int | None = None
) -> optuna.Study:
    """Create the study with ``record`` stored on it, or load it and check it holds the same
    search (model, data, metric, Pareto mode and space): ``settings`` must be resolved;
    ``judged``: how many trials the pruner may stop (all when None; ``make_sampler_and_pruner``).

    Other settings (epochs, seed, budgets...) may change only with ``settings.allow_changes``:
    the record then holds the new ones, and the list of changes."""
    storage = open_storage(settings.storage, settings.out)
    if settings.storage is None and isinstance(storage, optuna.storages.RDBStorage):
        write_ahead(storage)  # only a search writes enough for the log to pay
    sampler, pruner = make_sampler_and_pruner(settings, judged)
    directions = [METRICS[settings.metric]] + (["minimize"] if settings.pareto else [])
    try:
        with held():  # stopped half-way, a storage call leaves the storage so (``hold_in_calls``)
            study = optuna.create_study(
                storage=storage,
                study_name=settings.study_name,
                directions=directions,
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
    except Exception as e:
        raise StorageError(
            f"cannot create study {settings.study_name!r} in the storage: {redacted(first_line(e))}"
        ) from e
    hold_in_calls(storage_of(study))  # the trials' calls too, the sampler's and the pruner's
    previous = study.user_attrs.get(ATTR)
    if previous is None:
        study.set_user_attr(ATTR, record)
        return study
    checks = [
        ("model", previous["model"]["sha256"], record["model"]["sha256"]),
        ("data", previous["data"]["fingerprint"], record["data"]["fingerprint"]),
        ("metric", previous["settings"]["metric"], record["settings"]["metric"]),
        ("--pareto", previous["settings"].get("pareto"), record["settings"].get("pareto")),
        ("search space", previous["space"], record["space"]),
    ]
    for what, before, now in checks:
        if before != now:
            hint = ""
            if what == "search space":
                was = previous.get("space_source", "?")
                hint = f" (it was made with --space {was}; without --space the model picks one)"
            if what == "data":
                hint = _read_differently(previous["data"], record["data"])
            raise StorageError(
                f"study {study.study_name!r} already holds a search with another {what}{hint}: "
                "re-run with the same settings to continue it, or choose a new --study-name "
                "or --out to start another"
            )
    changed = changed_settings(previous["settings"], record["settings"])
    if changed and not settings.allow_changes:
        raise StorageError(
            f"study {study.study_name!r} was run with other settings ({'; '.join(changed)}): "
            "re-run with the same ones to continue it, add --allow-changes to continue with the "
            "new ones (they then apply to its old trials too), or choose a new --study-name or "
            "--out"
        )
    if changed:
        history = [*previous.get("changes", []), {"trial": len(study.trials), "changed": changed}]
        study.set_user_attr(ATTR, {**record, "changes": history})
    return study


def changed_settings(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two stored settings, one ``--flag OLD -> NEW`` each."""
    return [
        f"{FLAGS.get(key, '--' + key.replace('_', '-'))} {before.get(key)} -> {now.get(key)}"
        for key in sorted(set(before) | set(now))
        if key not in UNCHECKED and before.get(key) != now.get(key)
    ]


def finished_trials(study: optuna.Study) -> int:
    """Trials that ran to an end (complete, pruned or failed) and count toward ``--trials``:
    the baseline, retried and surplus trials not counted (``search.trials``)."""
    return finished(study)


def _read_differently(before: dict[str, Any], now: dict[str, Any]) -> str:
    """What differs in how the same data was read, for the message: the options that split
    or transform it change what a search trains on as much as another file does."""
    if before.get("spec") != now.get("spec"):
        return f" ({before.get('spec')!r}, now {now.get('spec')!r})"
    flags = ("target", "val_fraction", "image_size", "channels", "normalize")
    moved = [
        f"--{k.replace('_', '-')} {before.get(k)} -> {now.get(k)}"
        for k in flags
        if before.get(k) != now.get(k)
    ]
    return f" (the same {now.get('spec')!r}, read with {', '.join(moved)})" if moved else ""


def load_study(storage: str | None, out: Path, study_name: str | None = None) -> optuna.Study:
    """An existing study from ``storage`` (default: the study file in ``out``)."""
    if storage is None and not study_file(out).is_file():
        raise StorageError(
            f"no study in {str(out)!r}: there is no {str(study_file(out))!r}; pass the output "
            "folder of a search, or --storage"
        )
    # Read-only commands open it too: opening a mistyped path would make an empty storage.
    check_storage(storage)  # first: a mistyped URL taken for a path would print its password
    file = local_file(storage, out)
    fix = "pass the journal file or database URL a search wrote (e.g. OUT/study.journal)"
    if file is not None and not file.exists():
        raise StorageError(f"no study storage at {str(file)!r}: {fix}")
    # Refused before Optuna opens it, which would write its tables into the user's database.
    database = sqlite_file(storage, out)
    if database is not None and not holds_optuna_tables(database):
        where = f"the study file {str(database)!r}"
    elif file is None and storage is not None and not server_holds_optuna_tables(storage):
        where = f"the database {redacted(storage)!r}"
    else:
        where = None
    if where is not None:
        search = "with this --storage" if storage else f"in {str(out)!r}"
        raise StorageError(
            f"{where} holds no autotune study (no Optuna tables; it is left as it was): run "
            f"autotune search {search} first, or {fix}"
        )
    opened = open_storage(storage, out)
    names = optuna.study.get_all_study_names(opened)
    if not names:
        where = f"the study file {str(file)!r}" if file else f"storage {redacted(str(storage))!r}"
        raise StorageError(f"{where} holds no study: {fix}")
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


class WarmedMedianPruner(optuna.pruners.MedianPruner):
    """Optuna's median pruner, which reads every completed trial from the storage before it
    looks at the step: this one answers "go on" without that read where Optuna's would after
    it: during the warm-up, and while too few trials can have completed (trial ``n`` has at
    most ``n`` before it)."""

    def __init__(self, *, n_startup_trials: int, n_warmup_steps: int) -> None:
        super().__init__(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps)
        self.warmup, self.startup = n_warmup_steps, n_startup_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.warmup or trial.number < self.startup:
            return False
        return super().prune(study, trial)


def start_up(trials: int) -> int:
    """How many of ``trials`` a sampler or pruner waits for before it decides: a third, 3 to 10."""
    return max(3, min(10, trials // 3))


def warmup_epochs(settings: SearchSettings) -> int:
    """The epochs a trial trains before any pruning judges it (the median pruner's, and
    stage 2's ``stages.OutOfReach``): fine-tuning curves start slowly, a quarter of them."""
    return max(2, (settings.max_epochs or 20) // 4)


def make_sampler_and_pruner(
    settings: SearchSettings, judged: int | None = None
) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
    """TPE and the pruner ``settings`` name; ``judged``: how many of the trials the pruner may
    stop (a staged search's stage 1: ``stages.tuning_trials``), all when None."""
    # TPE needs some random trials to model from; a short study should not spend them all.
    startup = start_up(settings.trials)
    # The pruner's start-up is a share of the trials it judges: counted from the whole study,
    # it would leave most of a staged search's stage 1 (its only prunable trials) unjudged.
    judging_from = start_up(settings.trials if judged is None else judged)
    # Each worker its own seed, or all would sample the same first trials; the constant liar
    # keeps a worker from sampling what another is running.
    seed = (settings.seed + settings.worker + 1000 * machine_index()) % 2**32  # numpy stops there
    sampler = optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=startup,
        constant_liar=settings.workers > 1 or seed != settings.seed,
    )
    pruner: optuna.pruners.BasePruner
    if settings.pruner == "median":
        warmup = warmup_epochs(settings)
        pruner = WarmedMedianPruner(n_startup_trials=judging_from, n_warmup_steps=warmup)
    elif settings.pruner == "hyperband":
        assert settings.max_epochs is not None
        pruner = optuna.pruners.HyperbandPruner(min_resource=2, max_resource=settings.max_epochs)
    else:
        pruner = optuna.pruners.NopPruner()
    if settings.pareto:
        pruner = optuna.pruners.NopPruner()  # multi-objective trials cannot be pruned
    return sampler, pruner


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best feasible trial (``rank_key``); in a Pareto study, the front's best on the metric.

    Feasible is within the budgets of the latest run (``LIMITS``), which may have changed since
    older trials ran; else within the constraints each trial recorded."""
    ranked = ranked_trials(study)
    return ranked[0] if ranked else None


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The feasible completed trials (a Pareto study: those on its front), best first."""
    limits = study.user_attrs.get(LIMITS)
    s = metric_sign(study)
    if len(study.directions) == 1:
        candidates = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values is not None and feasible(t, limits)
        ]
    else:
        try:
            candidates = [t for t in study.best_trials if feasible(t, limits)]
        except ValueError:
            return []
    return sorted(candidates, key=lambda t: rank_key(t, s), reverse=True)


def rank_key(trial: FrozenTrial, s: float) -> tuple[float, float, int]:
    """How completed trials rank (larger is better): by ``trial_score`` (``s``: the metric's
    sign), then the earlier."""
    metric = metric_of_direction(s > 0)
    return (*trial_score(trial.values[0], trial.user_attrs, metric), -trial.number)


def trial_score(value: float, attrs: dict[str, Any], metric: str) -> tuple[float, float]:
    """``config.score_key`` of a trial: its ``metric`` ``value``, then the other validation
    score it recorded (in ``attrs``; the worst when missing) for ties."""
    if metric == "accuracy":
        return score_key(metric, value, attrs.get("val_loss", math.inf))
    return score_key(metric, attrs.get("val_accuracy", -math.inf), value)


def within_limits(sizes: dict[str, float | None], limits: dict[str, float]) -> bool:
    """The size rule: every limited size (or latency ratio) is known and at most its limit."""
    return all(
        (size := sizes.get(what)) is not None and size <= cap for what, cap in limits.items()
    )


def feasible(trial: FrozenTrial, limits: dict[str, float] | None) -> bool:
    """Whether a trial may be exported: within the flip budget it recorded and within the size
    budgets ``limits`` of the latest run (``LIMITS``; they may have changed since it ran), or,
    with none stored, within the constraints it recorded. The search, the leaderboard, the
    report and the export all judge trials by this one rule."""
    if limits is None:
        return all(v <= 0 for v in trial.constraints.values())
    if trial.constraints.get("flips", 0.0) > 0:  # the flip budget is no size limit
        return False
    return within_limits(recorded_sizes(trial), limits)


def recorded_sizes(trial: FrozenTrial) -> dict[str, float | None]:
    """What the size limits bound (``LIMITS``), as ``trial`` recorded it."""
    rec = TrialRecord.from_trial(trial)
    return {"params": rec.total_params, "macs": rec.macs, "latency_ratio": rec.latency_ratio}


def metric_sign(study: optuna.Study) -> float:
    """``config.sign`` of the study's metric, read off its first direction."""
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return sign(metric_of_direction(maximize))


def space_of(record: dict[str, Any]) -> SearchSpace:
    return parse_space(record["space"], record.get("space_source", "<study>"))


def config_of(trial: FrozenTrial, space: SearchSpace) -> TrialConfig:
    """The full configuration of a stored trial, as the objective recorded it (``config``);
    else its sampled values over the space's fixed ones."""
    recorded = TrialRecord.from_trial(trial).config
    if recorded is not None:
        return config_from(recorded)
    return config_from({**space.fixed_values(), **trial.params})
