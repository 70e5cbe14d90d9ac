"""In-trial checkpoints (``trial/resume.py``): a fit stopped after epoch k continues at k+1 and
ends where the uninterrupted fit ends, bit for bit (CPU, one thread)."""

from __future__ import annotations

import copy
import hashlib
import io
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from conftest import blobs
from optuna.trial import TrialState
from rich.console import Console
from torch import nn
from torch.utils.data import TensorDataset
from typer.testing import CliRunner

from autotune import search
from autotune.cli import app
from autotune.config import TrialConfig
from autotune.load.tasks import TaskData, from_datasets, from_tensors
from autotune.paths import study_file
from autotune.search.study import load_study
from autotune.search.trials import continued, finished
from autotune.trial.fit import FitResult, fine_tune
from autotune.trial.resume import Resume

EPOCHS = 6


class Stop(Exception):
    """What a SIGTERM does to a fit, from the inside: an exception out of ``on_epoch``."""


class DropNet(nn.Module):
    """An MLP with dropout (the global generator's draws) and a BatchNorm (its buffers)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3))
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class ConvNet(nn.Module):
    """A tiny conv net with dropout on 3x8x8 images, for the augmentation's generator and the
    streamed batches."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.out = nn.Sequential(nn.Dropout(0.3), nn.Linear(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(x).mean((2, 3)))


def _data(kind: str, monkeypatch: pytest.MonkeyPatch) -> TaskData:
    """``vectors`` (8 features), ``images`` (3x8x8), or the same images ``streamed`` from disk
    by a loader with a worker process (a resident limit of ~10 KB)."""
    if kind == "vectors":
        return from_tensors(*blobs())
    x, y = blobs(120)
    pattern = torch.Generator().manual_seed(2)
    images = x[:, :3, None, None] + 0.5 * torch.randn(120, 3, 8, 8, generator=pattern)
    if kind == "images":
        return from_tensors(images, y)
    monkeypatch.setenv("AUTOTUNE_RESIDENT_MB", "0.01")
    data = from_datasets(TensorDataset(images, y), workers=1)
    assert data.streamed
    return data


CASES = {
    "adamw-ema-dropout": (DropNet, "vectors", TrialConfig(lr=1e-2, average="ema", batch_size=16)),
    "sgd-label-smoothing": (
        DropNet,
        "vectors",
        TrialConfig(lr=5e-2, optimizer="sgd", loss="label_smoothing", weight_decay=1e-3),
    ),
    "adamw-augmented-images": (
        ConvNet,
        "images",
        TrialConfig(lr=1e-2, augment="light", average="ema"),
    ),
    "adamw-streamed-images": (ConvNet, "streamed", TrialConfig(lr=1e-2, batch_size=16)),
}


def _hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _fit(
    model: nn.Module,
    data: TaskData,
    config: TrialConfig,
    reported: list[tuple[int, float]],
    resume: Resume | None = None,
    stop_at: int | None = None,
) -> FitResult:
    def on_epoch(epoch: int, value: float) -> None:
        if epoch == stop_at:
            raise Stop
        reported.append((epoch, value))

    return fine_tune(
        model, data, config, max_epochs=EPOCHS, patience=EPOCHS, seed=3, on_epoch=on_epoch,
        resume=resume,
    )  # fmt: skip


@pytest.mark.parametrize("k", [2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_fit_stopped_after_epoch_k_resumes_at_k_plus_1_with_the_same_weights_and_value(
    case: str, k: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, kind, config = CASES[case]
    data = _data(kind, monkeypatch)
    torch.manual_seed(0)
    source = make()
    whole, reported_whole = copy.deepcopy(source), list[tuple[int, float]]()
    expected = _fit(whole, data, config, reported_whole)

    path, identity = tmp_path / "resume.pt", {"config": config.__dict__}
    # Stopped in epoch k + 1: the last checkpoint is the one written after epoch k.
    with pytest.raises(Stop):
        _fit(copy.deepcopy(source), data, config, [], Resume(path, 0.0, identity), stop_at=k + 1)
    assert path.is_file()

    # The rerun builds the trial's model again from the source, and continues from the file.
    resumed, reported = copy.deepcopy(source), list[tuple[int, float]]()
    resume = Resume(path, 0.0, identity)
    result = _fit(resumed, data, config, reported, resume)
    assert resume.resumed_after == k
    assert reported == reported_whole  # epochs 1..k told again, then k+1.. as they came
    assert result.history == expected.history
    assert (result.best, result.best_epoch, result.epochs_run, result.stop_reason) == (
        expected.best, expected.best_epoch, expected.epochs_run, expected.stop_reason,
    )  # fmt: skip
    assert _hash(resumed) == _hash(whole)


def test_a_file_written_for_another_configuration_is_not_resumed(tmp_path: Path) -> None:
    data, config = from_tensors(*blobs()), TrialConfig(lr=1e-2)
    torch.manual_seed(0)
    source = DropNet()
    path = tmp_path / "resume.pt"
    with pytest.raises(Stop):
        _fit(copy.deepcopy(source), data, config, [], Resume(path, 0.0, {"lr": 1e-2}), stop_at=3)
    other = Resume(path, 0.0, {"lr": 2e-2})
    reported: list[tuple[int, float]] = []
    _fit(copy.deepcopy(source), data, config, reported, other)
    assert other.resumed_after == 0 and [e for e, _ in reported] == list(range(1, EPOCHS + 1))


def test_a_checkpoint_is_written_once_the_interval_has_passed_and_never_in_a_shorter_fit(
    tmp_path: Path,
) -> None:
    """A fake clock: 10 s pass per reading, and a checkpoint is due every 15 s."""
    epochs: list[int] = []

    class Counted(Resume):
        def save(self, *args: Any) -> None:
            epochs.append(args[-1]["epoch"])  # the loop's record comes last
            super().save(*args)

    ticks = iter(range(0, 10_000, 10))
    resume = Counted(tmp_path / "resume.pt", 15.0, {}, clock=lambda: float(next(ticks)))
    _fit(DropNet(), from_tensors(*blobs()), TrialConfig(), [], resume)
    # Read at the start (0), after epoch 1 (10), 2 (20: due; the save reads 30), 3 (40), 4 (50:
    # due), 5 (70); after the last epoch nothing is left to resume.
    assert epochs == [2, 4]

    never = Resume(tmp_path / "never.pt", 1e9, {})
    _fit(DropNet(), from_tensors(*blobs()), TrialConfig(), [], never)
    assert not never.path.exists()


RESUMABLE = {
    "lr": {"low": 1e-3, "high": 3e-2, "log": True},
    "batch_size": [16, 32],
    "fit": {"max_epochs": EPOCHS, "patience": EPOCHS},
}


def _search(model: nn.Module, data: TaskData, out: Path, **kwargs: Any) -> Any:
    kwargs = dict[str, Any](space=RESUMABLE, trials=2) | kwargs
    # 1e-9 minutes: a checkpoint after every epoch, whatever the machine's speed.
    return search(
        model, data, out=out, checkpoint_every=1e-9, console=Console(file=io.StringIO()),
        **kwargs,
    )  # fmt: skip


class Killed(BaseException):
    """Ends the search where it is, leaving its trial RUNNING, as a kill -9 would."""


@pytest.mark.parametrize("how", ["signal", "kill -9"])
def test_a_search_stopped_in_a_trial_continues_it_from_its_checkpoint_to_the_same_result(
    how: str,
    tiny_model: nn.Module,
    tiny_data: TaskData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trial 2 is stopped in its epoch 4, by a SIGINT (as a SIGTERM stops it) or outright: the
    rerun runs it again, trains epochs 4-6 only, and ends with the value and history trial 2
    has in the same search run without a stop."""
    import signal
    import socket

    from autotune.results.live import LiveLeaderboard

    def stop(self: LiveLeaderboard, number: int, doing: str) -> None:
        if number == 2 and doing.startswith("epoch 4/"):
            if how == "signal":
                signal.raise_signal(signal.SIGINT)
            raise Killed

    whole = _search(copy.deepcopy(tiny_model), tiny_data, tmp_path / "whole").study.trials[2]
    out = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        patch.setattr(LiveLeaderboard, "progress", stop)
        with pytest.raises(KeyboardInterrupt if how == "signal" else Killed):
            _search(copy.deepcopy(tiny_model), tiny_data, out)
    stopped = load_study(None, out)
    if how == "signal":
        assert stopped.trials[2].user_attrs["interrupted"]
    else:  # its worker: a pid above Linux's pid_max, which no live process has
        dead = f"{socket.gethostname()}:{2**22 + 1}"
        stopped._storage.set_trial_user_attr(stopped.trials[2]._trial_id, "worker", dead)
    assert [p.name for p in out.glob("checkpoints/*/resume_*.pt")] == ["resume_0002.pt"]

    result = _search(copy.deepcopy(tiny_model), tiny_data, out)
    again = result.study
    again_of_2 = [t for t in again.trials if t.number > 2 and continued(t) == 2]
    assert len(again_of_2) == 1 and again_of_2[0].state == TrialState.COMPLETE
    trial = again_of_2[0]
    assert trial.user_attrs["resumed_after"] == 3  # it trained epochs 4 to 6
    assert trial.params == stopped.trials[2].params == whole.params
    assert trial.user_attrs["history"] == whole.user_attrs["history"]
    assert trial.value == whole.value
    assert trial.intermediate_values == whole.intermediate_values  # epochs 1-3 told again
    assert finished(again) == 2 and len(again.trials) == 1 + 2 + 1  # the stopped one not counted
    assert not list(out.glob("checkpoints/*/resume_*.pt"))  # a finished trial leaves none

    # Exported without its saved weights, it is retrained with trial 2's seed: the same model.
    for saved in out.glob(f"checkpoints/*/trial_{trial.number:04d}.pt"):
        saved.unlink()
    exported = result.export(tmp_path / "export", trial=trial.number).config
    assert exported["fit"]["seed"] == 2  # the search's seed, 0, plus 2
    assert exported["metrics"]["reproduces_study_value"]
    assert exported["metrics"]["val_loss"] == trial.user_attrs["val_loss"]  # accuracy saturates


def test_a_checkpoint_left_by_a_deleted_study_is_not_continued_by_a_new_one(
    tiny_model: nn.Module, tiny_data: TaskData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new study's trial 2 has the old one's number and parameters (same seed), but it is
    another trial: it trains from epoch 1, and removes the stale file when it ends."""
    import signal

    from autotune.results.live import LiveLeaderboard

    def stop(self: LiveLeaderboard, number: int, doing: str) -> None:
        if number == 2 and doing.startswith("epoch 4/"):
            signal.raise_signal(signal.SIGINT)

    with monkeypatch.context() as patch:
        patch.setattr(LiveLeaderboard, "progress", stop)
        with pytest.raises(KeyboardInterrupt):
            _search(copy.deepcopy(tiny_model), tiny_data, tmp_path)
    assert list(tmp_path.glob("checkpoints/*/resume_0002.pt"))
    study_file(tmp_path).unlink()
    trials = _search(copy.deepcopy(tiny_model), tiny_data, tmp_path).study.trials
    assert [t.user_attrs.get("resumed_after") for t in trials] == [None] * 3
    assert not list(tmp_path.glob("checkpoints/*/resume_*.pt"))


STAGED = {
    "lr": {"low": 1e-3, "high": 3e-2, "log": True},
    "unfreeze": {"low": 1, "high": "all"},
    "unfreeze_order": ["output", "shap"],
    "prune": {"low": 0.0, "high": 0.5},
    "analysis": {"samples": 16, "background": 4, "nsamples": 2},
    "fit": {"max_epochs": EPOCHS, "patience": EPOCHS},
}


def test_a_stage_1_trial_continued_under_a_stage_2_number_stays_in_stage_1(
    tiny_model: nn.Module, tiny_data: TaskData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stage 1 is trials 1 and 2 of 4; trial 2, stopped in its epoch 4, runs again under a
    later number, in stage 2's range: it is still the stage-1 trial, continued."""
    import signal

    from autotune.results.live import LiveLeaderboard

    def stop(self: LiveLeaderboard, number: int, doing: str) -> None:
        if number == 2 and doing.startswith("epoch 4/"):
            signal.raise_signal(signal.SIGINT)

    kwargs: dict[str, Any] = {"space": STAGED, "trials": 4, "pruner": "none"}
    whole = _search(copy.deepcopy(tiny_model), tiny_data, tmp_path / "whole", **kwargs)
    out = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        patch.setattr(LiveLeaderboard, "progress", stop)
        with pytest.raises(KeyboardInterrupt):
            _search(copy.deepcopy(tiny_model), tiny_data, out, **kwargs)
    again = _search(copy.deepcopy(tiny_model), tiny_data, out, **kwargs).study
    trial = next(t for t in again.trials if t.user_attrs.get("resumes") == 2)
    assert trial.number > 2 and trial.user_attrs["stage"] == 1
    assert trial.user_attrs["resumed_after"] == 3
    assert trial.user_attrs["history"] == whole.study.trials[2].user_attrs["history"]
    assert finished(again) == 4


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_a_checkpoint_interval_that_is_not_a_positive_number_is_refused_before_any_work(
    value: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["search", "--model", "demo", "--checkpoint-every", value, "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: --checkpoint-every must be a positive number of minutes, got {float(value)!r}"
    )
    assert not out.exists()


@pytest.mark.slow
def test_a_sigterm_mid_trial_then_the_same_command_continues_the_trial_to_the_same_result(
    tmp_path: Path,
) -> None:
    """Real processes, as a scheduler runs them: ``autotune search --checkpoint-every`` is sent
    SIGTERM once its trial has written a checkpoint; the same command continues that trial and
    it ends as in an uninterrupted search."""
    import signal
    import subprocess

    from processes import command, make_job, start, study_in, wait_for

    args, env = make_job(tmp_path / "job")
    # 60 epochs: the trial runs on for seconds after its first checkpoint, where the signal lands.
    args += ["--trials", "2", "--epochs", "60", "--checkpoint-every", "1e-9"]
    out, log = tmp_path / "out", tmp_path / "log"
    process = start([*args, "--out", str(out)], env, log)
    wait_for(lambda: bool(list(out.glob("checkpoints/*/resume_*.pt"))), process, log)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143, log.read_text()[-3000:]
    stopped = [t for t in study_in(out).trials if t.user_attrs.get("interrupted")]
    assert len(stopped) == 1
    number = stopped[0].number
    assert [p.name for p in out.glob("checkpoints/*/resume_*.pt")] == [f"resume_{number:04d}.pt"]

    def run(folder: Path) -> None:
        done = subprocess.run(
            command([*args, "--out", str(folder)]), env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr

    run(out)
    study = study_in(out)
    trial = next(t for t in study.trials if t.user_attrs.get("resumes") == number)
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["resumed_after"] >= 1
    assert finished(study) == 2
    assert not list(out.glob("checkpoints/*/resume_*.pt"))

    run(tmp_path / "whole")
    whole = study_in(tmp_path / "whole").trials[number]
    assert trial.params == whole.params
    assert trial.user_attrs["history"] == whole.user_attrs["history"]
    assert trial.value == whole.value


@pytest.mark.parametrize("stop", ["after a copy", "in the middle of a copy", "kill -9"])
def test_a_trial_stopped_on_one_machine_continues_on_another_from_the_checkpoint_store(
    stop: str,
    tiny_model: nn.Module,
    tiny_data: TaskData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two machines share the study and ``--checkpoint-store``, each with an output folder of
    its own. Machine A's trial 2 is stopped in its epoch 4 (by a signal, or outright: its
    worker is then found dead and the trial retried), or while it copies epoch 3's checkpoint;
    machine B, which has no file of A's and is not the study's first machine, continues it from
    the last whole copy (epoch 3, or 2) and ends with the value and history of the
    uninterrupted trial."""
    import signal
    import socket

    from optuna.artifacts import FileSystemArtifactStore

    from autotune.results.live import LiveLeaderboard

    store, storage = tmp_path / "store", f"sqlite:///{tmp_path / 'shared.db'}"
    store.mkdir()
    shared = {"checkpoint_store": store, "storage": storage}
    whole = _search(copy.deepcopy(tiny_model), tiny_data, tmp_path / "whole").study.trials[2]

    def stop_in_epoch_4(self: LiveLeaderboard, number: int, doing: str) -> None:
        if number == 2 and doing.startswith("epoch 4/"):
            if stop == "kill -9":
                raise Killed
            signal.raise_signal(signal.SIGINT)

    copies: list[str] = []
    write = FileSystemArtifactStore.write

    def stop_in_copy_3(self: FileSystemArtifactStore, artifact_id: str, body: Any) -> None:
        copies.extend([artifact_id] if "-0002-" in artifact_id else [])
        if len(copies) == 3 and artifact_id == copies[-1]:  # epoch 3's: half of it is written
            (store / artifact_id).write_bytes(body.read()[:1000])
            signal.raise_signal(signal.SIGINT)
        write(self, artifact_id, body)

    with monkeypatch.context() as patch:
        if stop == "in the middle of a copy":
            patch.setattr(FileSystemArtifactStore, "write", stop_in_copy_3)
        else:
            patch.setattr(LiveLeaderboard, "progress", stop_in_epoch_4)
        with pytest.raises(Killed if stop == "kill -9" else KeyboardInterrupt):
            _search(copy.deepcopy(tiny_model), tiny_data, tmp_path / "a", **shared)
    if stop == "kill -9":  # its worker: a pid above Linux's pid_max, which no live process has
        study = optuna.load_study(study_name=None, storage=storage)
        dead = f"{socket.gethostname()}:{2**22 + 1}"
        study._storage.set_trial_user_attr(study.trials[2]._trial_id, "worker", dead)
    # Trial 1 (the recipe) ended and left no copy; trial 2's alternate between two files.
    assert sorted(p.name for p in store.iterdir()) == [
        "resume-autotune-0002-0.pt",
        "resume-autotune-0002-1.pt",
    ]

    # Machine B is not the first machine: it neither exports nor queues the study's seeds.
    monkeypatch.setenv("AUTOTUNE_WORKER_INDEX", "1")
    again = _search(copy.deepcopy(tiny_model), tiny_data, tmp_path / "b", **shared).study
    assert not (tmp_path / "b" / "best").exists()
    trial = next(t for t in again.trials if t.number > 2 and continued(t) == 2)
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["resumed_after"] == (2 if stop == "in the middle of a copy" else 3)
    assert trial.user_attrs["history"] == whole.user_attrs["history"]
    assert trial.value == whole.value
    assert finished(again) == 2
    assert not list(store.iterdir())  # the trial ended: its copies are deleted


def test_without_the_checkpoint_store_another_machine_starts_the_stopped_trial_over(
    tiny_model: nn.Module, tiny_data: TaskData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same stop without ``--checkpoint-store``: machine B has no checkpoint to continue
    from, so the stopped trial is not queued again; another trial takes its place."""
    import signal

    from autotune.results.live import LiveLeaderboard

    def stop(self: LiveLeaderboard, number: int, doing: str) -> None:
        if number == 2 and doing.startswith("epoch 4/"):
            signal.raise_signal(signal.SIGINT)

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    with monkeypatch.context() as patch:
        patch.setattr(LiveLeaderboard, "progress", stop)
        with pytest.raises(KeyboardInterrupt):
            _search(copy.deepcopy(tiny_model), tiny_data, tmp_path / "a", storage=storage)
    again = _search(copy.deepcopy(tiny_model), tiny_data, tmp_path / "b", storage=storage).study
    assert [t.user_attrs.get("resumes") for t in again.trials] == [None] * 4
    assert finished(again) == 2


@pytest.mark.parametrize("problem", ["missing", "a file"])
def test_a_checkpoint_store_that_is_not_a_folder_is_refused_before_any_work(
    problem: str, tmp_path: Path
) -> None:
    where = tmp_path / "store"
    if problem == "a file":
        where.write_text("")
    out = tmp_path / "out"
    args = ["search", "--model", "demo", "--checkpoint-store", str(where), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: --checkpoint-store {str(where)!r} is not a folder: create it, or mount there "
        "the folder every machine of the search shares"
    )
    assert not out.exists()


def test_a_stopped_trial_queued_by_two_machines_at_once_runs_once(tmp_path: Path) -> None:
    """Two machines queued trial 0 again in the same instant: the copy that starts second is
    stopped at once as a surplus, not counted, and a later interruption is queued once more."""
    from optuna.distributions import FloatDistribution

    from autotune.search.trials import Surplus, enqueue_resumes, within_total

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    lr = {"lr": FloatDistribution(1e-3, 1e-1)}
    stopped = optuna.trial.create_trial(
        state=TrialState.FAIL, params={"lr": 0.01}, distributions=lr,
        user_attrs={"interrupted": True},
    )  # fmt: skip
    study.add_trial(stopped)
    assert enqueue_resumes(study, lambda n: True) == [0]
    assert enqueue_resumes(study, lambda n: True) == []  # it waits to run: not queued twice
    study.add_trial(  # the other machine's, queued in the same instant
        optuna.trial.create_trial(
            state=TrialState.WAITING, params={"lr": 0.01}, distributions=lr,
            user_attrs={"resumes": 0},
        )
    )  # fmt: skip

    def interrupted(trial: optuna.Trial) -> float:
        raise KeyboardInterrupt

    first, second = study.ask(), study.ask()
    with pytest.raises(Surplus, match="another worker continues trial 0 already"):
        within_total(lambda trial: 1.0, study, total=5)(second)
    study.tell(second, state=TrialState.FAIL)
    with pytest.raises(KeyboardInterrupt):
        within_total(interrupted, study, total=5)(first)
    study.tell(first, state=TrialState.FAIL)
    assert [t.user_attrs.get("surplus") for t in study.trials] == [None, None, True]
    assert enqueue_resumes(study, lambda n: True) == [0]  # stopped again: queued again
