"""The exported bundle: the model (pickled module and torch.export program), config, leaderboard.

``config.yaml`` holds the parameters the trial applied, the metrics (validation and test), the
source's hash, the data spec, the seed, the autotune version and the commands that reproduce it.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial
from torch import nn

from autotune.config import VERSION, SearchSettings, sign
from autotune.errors import AutotuneError, first_line
from autotune.load.anatomy import count_parameters
from autotune.load.job import Job
from autotune.load.tasks import TaskData
from autotune.paths import export_dir, leaderboard_csv, write_text_atomically
from autotune.results import yaml_text
from autotune.results.bundle_files import earlier_bundle, remove_stale
from autotune.results.card import write_card
from autotune.results.deploy import save_model
from autotune.results.errors import error_metrics, exported_errors
from autotune.results.leaderboard import Leaderboard
from autotune.results.onnx_export import export_formats, save_onnx
from autotune.results.pick import over_budgets, pick_trial
from autotune.results.reproduce import reproduce_command
from autotune.results.structure import kept_units
from autotune.search.conditions import applied_values
from autotune.search.prepare import adapt_space, make_maker, run_analyses, study_checkpoints
from autotune.search.record import TrialRecord
from autotune.search.selection import choice_note
from autotune.search.space import SearchSpace
from autotune.search.stages import slimming_maker, slimming_space
from autotune.search.study import config_of, study_record
from autotune.search.trials import continued
from autotune.trial.build import Changes
from autotune.trial.checkpoints import Checkpoints
from autotune.trial.cost import Cost, measure
from autotune.trial.fit import Evaluation, configure_threads, evaluate
from autotune.trial.maker import TrialMaker


@dataclass
class Workspace:
    """What rebuilding a study's trials needs: the job, the space as the search ran it (fitted to
    the model), the resolved settings, and the ``TrialMaker`` with its rankings."""

    job: Job
    space: SearchSpace
    settings: SearchSettings
    maker: TrialMaker
    checkpoints: Checkpoints
    """Where the study's trials' weights were saved (``OUT/checkpoints/STUDY``)."""
    original: Cost | None = None
    """The source model's cost, when the search measured it already."""

    @classmethod
    def create(
        cls,
        job: Job,
        space: SearchSpace,
        settings: SearchSettings,
        study: optuna.Study | None = None,
        saved: bool = True,
    ) -> Workspace:
        """The workspace of the stored ``study``, for ``autotune export``; without ``saved``,
        its trials are retrained rather than read from their checkpoints."""
        settings = settings.resolved(space.fit)
        space, _ = adapt_space(space, job)
        checkpoints = study_checkpoints(settings, study) if saved else Checkpoints(None)
        return cls(job, space, settings, make_maker(job, settings), checkpoints)


@dataclass
class ExportResult:
    """What ``export_trial`` wrote."""

    folder: Path
    trial: int
    model: nn.Module
    """The exported model, on the CPU, in eval mode."""
    config: dict[str, Any]
    """The content of ``config.yaml``."""


@dataclass
class Rebuilt:
    """A trial's trained model, the data it takes, and where its weights came from."""

    model: nn.Module
    data: TaskData
    changes: Changes
    origin: str


def rebuild(
    work: Workspace, study: optuna.Study, trial: FrozenTrial, refit: bool = False
) -> Rebuilt:
    """The trial's trained model: from its checkpoint, else retrained with its seed. A stage-2
    trial is rebuilt from its parent's trained model, ranked again as the search ranked it.

    With ``refit``, the trial's configuration is trained again on the training and validation
    samples together, for the epoch count at which the trial was best.
    """
    maker = work.maker
    rec = TrialRecord.from_trial(trial)
    if rec.baseline:
        module = work.job.model.module.to(maker.device)
        return Rebuilt(module, maker.data, Changes(), "the source model, unchanged")
    maker = trial_maker(work, study, trial)
    config = config_of(trial, work.space)
    if refit:
        epochs = int(rec.best_epoch or work.settings.max_epochs or 1)
        model, changes, data = maker.build(config)
        maker.refit(model, config, continued(trial), data, epochs)
        pooled = len(data.x_train) + len(data.x_val)
        how = f"refit on the training and validation samples ({pooled}) for {epochs} epochs"
        return Rebuilt(model, data, changes, f"{how}, with trial {trial.number}'s parameters")
    seeded = continued(trial)  # the seed of the trial it ran again, if it did
    model, changes, data, origin = maker.trained(config, trial.number, work.checkpoints, seeded)
    return Rebuilt(model, data, changes, origin)


def trial_maker(work: Workspace, study: optuna.Study, trial: FrozenTrial) -> TrialMaker:
    """The maker that builds ``trial``'s model: the search's, or for a stage-2 trial one whose
    source is its parent's trained model, ranked again as the search ranked it."""
    configure_threads(work.maker.device, work.settings.threads)
    # The analyses come from the cache: the same rankings as the trial's.
    run_analyses(work.job, work.space, work.maker.analyses)
    parent = TrialRecord.from_trial(trial).parent
    if parent is None:
        return work.maker
    adapted = rebuild(work, study, study.trials[parent]).model
    return slimming_maker(work.maker, adapted, work.job, slimming_space(work.space))


def export_trial(
    work: Workspace,
    study: optuna.Study,
    number: int | None = None,
    folder: Path | None = None,
    refit: bool = False,
) -> ExportResult:
    """Write trial ``number`` (default: the best) as a bundle that runs without autotune.

    ``refit``: train the trial's configuration again on training and validation samples together
    (see ``rebuild``); its validation scores are then not held out, and say so.
    """
    trial = pick_trial(study, number)
    out = work.settings.out
    folder = folder or export_dir(out, None if number is None else trial.number)
    folder.mkdir(parents=True, exist_ok=True)
    earlier = earlier_bundle(folder)  # read before this export writes over any of it
    refit = refit and not TrialRecord.from_trial(trial).baseline
    try:
        rebuilt = rebuild(work, study, trial, refit)
        model, data = rebuilt.model, rebuilt.data
        val = evaluate(model, data.x_val, data.y_val)
        test = None
        if data.x_test is not None and data.y_test is not None:
            test = evaluate(model, data.x_test, data.y_test)
        structure = _structure(work, rebuilt, model)
    except AutotuneError:
        raise
    except Exception as e:
        # The model ran during its trial, yet a model can fail later (after some calls).
        raise AutotuneError(
            f"trial {trial.number}'s model failed when rebuilt and evaluated for export: "
            f"{first_line(e)}"
        ) from e
    source = work.job.model.module.to(work.maker.device)
    errors = exported_errors(source, work.maker.reference, model, data, work.maker.data, folder)
    model = model.cpu().eval()
    preprocessing = work.job.data.preprocessing if work.settings.export_preprocessing else None
    kept = rebuilt.changes.features
    batch = work.settings.latency_batch  # the ONNX check runs on a batch of that size
    columns = None if kept is None else (kept, work.job.data.x_val[:batch].cpu())
    files = save_model(model, data.x_val[:2].cpu(), folder, preprocessing, columns)
    onnx = None
    if "onnx" in export_formats(work.settings.export):
        example, threads = data.x_val[:batch].cpu(), work.settings.threads
        files["model.onnx"], onnx = save_onnx(
            model, example, folder, preprocessing, columns, threads
        )
    record = study_record(study)
    config = _config(work, study, trial, record, val, test, rebuilt.origin, files, model)
    config["structure"] = structure
    config["metrics"]["validation_held_out"] = not refit
    config["metrics"] |= error_metrics(errors)
    config["errors"] = errors
    over = over_budgets(study, trial)  # asked for by number: the search's pick never is
    asked = f"trial {number} as asked" + (f", over the search's budgets ({over})" if over else "")
    config["chosen"] = asked if number is not None else choice_note(study)
    config["onnx"] = onnx
    config["data"]["samples"] = {"train": len(data.x_train), "validation": len(data.x_val)}
    config["data"]["samples"]["test"] = None if data.x_test is None else len(data.x_test)
    # One sample's shape, as each file takes it (model.onnx takes what model.pt2 takes).
    config["sample_shape"] = {"model.pt": list(data.x_val.shape[1:])}
    config["sample_shape"]["model.pt2"] = list(work.job.data.x_val.shape[1:])
    remove_stale(folder, earlier, config)  # before config.yaml, which no longer lists them
    write_text_atomically(folder / "config.yaml", yaml_text.dump(config), keep_old=False)
    write_card(folder, config)
    if number is None:
        # The held-out split is read for the chosen model only; the dashboard shows it here, and
        # leaderboard.csv the latency measured above (``results.rows.with_export_latency``).
        latency = structure["latency_ms"]
        study.set_user_attr(
            "best_export",
            {"trial": trial.number, **config["metrics"], "errors": errors, "latency_ms": latency},
        )
    try:
        write_leaderboard(study, work.settings.metric, leaderboard_csv(out))
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT):
            raise
        # A search's folder shared read-only, or no folder (--storage named the study, --to the
        # bundle's folder): the bundle is written, and the leaderboard stays as the search left
        # it (it marks the search's own export).
    return ExportResult(folder, trial.number, model, config)


def _structure(work: Workspace, rebuilt: Rebuilt, model: nn.Module) -> dict[str, Any]:
    """What the exported model is, against the source: size, speed, and the units it kept."""
    # The search measured the source already; a bare export measures it here.
    device = work.maker.device
    source = work.job.model.module.to(device)
    original = work.original or measure(source, work.maker.data.x_val)
    # The figure the summary quotes: worth a second of timing, not a trial's few milliseconds.
    now = measure(model, rebuilt.data.x_val, source=(source, work.maker.data.x_val), budget_s=1.0)
    assert now.latency_ms is not None and original.latency_ms is not None  # both timed
    x_val = work.job.data.x_val
    columns = x_val.shape[1] if x_val.ndim == 2 else None
    return {
        "params": {"model": now.params, "source": original.params},
        "macs": {"model": now.macs, "source": original.macs},
        "latency_ms": {
            "model": round(now.latency_ms, 3),
            "source": round(original.latency_ms, 3),
            # Timed alternately with the source in one process: the figure to compare by.
            "ratio": round(now.latency_ratio or 0.0, 4),
            "ratio_spread": round(now.ratio_spread or 0.0, 4),
            "batch": 32,
            "device": str(device),
            "threads": torch.get_num_threads(),
        },
        **kept_units(rebuilt.changes, columns, work.job.data.feature_names),
    }


def _config(
    work: Workspace,
    study: optuna.Study,
    trial: FrozenTrial,
    record: dict[str, Any],
    val: Evaluation,
    test: Evaluation | None,
    origin: str,
    files: dict[str, str],
    model: nn.Module,
) -> dict[str, Any]:
    s = work.settings
    trials = study.get_trials(deepcopy=False)
    baseline = next(t for t in trials if TrialRecord.from_trial(t).baseline)
    base_value = baseline.values[0] if baseline.values else None
    metric = s.metric
    value = val.metric(metric)
    trainable, total = count_parameters(model)
    is_baseline = TrialRecord.from_trial(trial).baseline
    params = {} if is_baseline else applied_values(config_of(trial, work.space))
    value_of_trial = trial.values[0] if trial.values else None
    out = str(s.out)
    return {
        "autotune_version": VERSION,
        "study": study.study_name,
        "trial": trial.number,
        "params": params,
        "metrics": {
            "metric": metric,
            f"val_{metric}": value,
            "val_accuracy": val.accuracy,
            "val_loss": val.loss,
            f"baseline_val_{metric}": base_value,
            "gain": None if base_value is None else sign(metric) * (value - base_value),
            "test_accuracy": None if test is None else test.accuracy,
            "test_loss": None if test is None else test.loss,
            "reproduces_study_value": value_of_trial is not None
            and abs(value - value_of_trial) < 1e-9,
        },
        "model": {**record["model"], "trainable_params": trainable, "total_params": total},
        "data": record["data"],
        "fit": {
            "max_epochs": s.max_epochs,
            "patience": s.patience,
            "seed": s.seed + continued(trial),
            "study_seed": s.seed,
            "device": str(work.maker.device),
            "threads": s.threads,
        },
        "weights": origin,
        "files": files,
        "reproduce": reproduce_command(out, s.storage, study.study_name, trial.number, record),
        "search_command": record.get("command"),
    }


def write_leaderboard(study: optuna.Study, metric: str, path: Path) -> None:
    write_text_atomically(path, Leaderboard.from_study(study, metric).to_csv())
