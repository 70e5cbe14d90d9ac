"""In-trial checkpoints where every machine reads them (``--checkpoint-store FOLDER``), so that
a trial stopped on one machine continues on another from its last checkpoint.

Each in-trial checkpoint (``trial.resume``) is written in the output folder as always, then
copied into an Optuna artifact store on a folder every machine mounts (NFS, Lustre, a bucket
mounted with s3fs or gcsfuse), and the copy's id is recorded on the trial (``resume_copy``).
The study, which every machine reads, so says where the latest copy is: a run anywhere queues
the interrupted trial again (``search.trials.enqueue_resumes``) and its fit continues from it.

Copies alternate between two ids, and the record moves to a copy only once it is whole: a
machine stopped in the middle of a copy leaves the previous one to continue from.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from autotune.config import SearchSettings
from autotune.errors import AutotuneError, first_line
from autotune.paths import resume_path, write_atomically
from autotune.search.record import TrialRecord, record
from autotune.search.trials import continued


def check_store(folder: str | Path | None) -> None:
    """Refuse, before any work, a ``--checkpoint-store`` that is not a folder this process can
    write: each checkpoint would fail to copy, hours later."""
    if folder is None:
        return
    path = Path(folder)
    if not path.is_dir():
        raise AutotuneError(
            f"--checkpoint-store {str(folder)!r} is not a folder: create it, or mount there the "
            "folder every machine of the search shares"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise AutotuneError(
            f"--checkpoint-store {str(folder)!r} is not writable by this user: give it write "
            "permission, or choose another shared folder"
        )


def discard(folder: Path | None, copies: ResumeStore | None, number: int) -> None:
    """Delete the in-trial checkpoint of trial ``number`` (``continued`` number) in the output
    folder's ``folder`` and its copies: the trial ended (completed, pruned or failed)."""
    if folder is not None:
        resume_path(folder, number).unlink(missing_ok=True)
    if copies is not None:
        copies.discard(number)


def checkpoint_kept(
    study: optuna.Study, folder: Path, copies: ResumeStore | None
) -> Callable[[int], bool]:
    """Whether trial ``number`` (``continued`` number) has an in-trial checkpoint to continue
    from: in the output folder's ``folder``, or copied where every machine reads it."""

    def kept(number: int) -> bool:
        if resume_path(folder, number).is_file():
            return True
        trials = study.get_trials(deepcopy=False)
        return copies is not None and copies.latest(trials, number) is not None

    return kept


@dataclass(frozen=True)
class ResumeStore:
    """The copies of one study's in-trial checkpoints."""

    folder: Path
    study: str

    @classmethod
    def of(cls, settings: SearchSettings) -> ResumeStore | None:
        """The settings' ``--checkpoint-store``, if any."""
        folder = settings.checkpoint_store
        return None if folder is None else cls(Path(folder), settings.study_name)

    @property
    def store(self) -> FileSystemArtifactStore:
        return FileSystemArtifactStore(self.folder)

    def artifact_id(self, number: int, slot: int) -> str:
        """The id of copy ``slot`` (0 or 1) of the checkpoint of trial ``number`` (``continued``
        number). It names the study: studies may share the folder."""
        study = re.sub(r"[^A-Za-z0-9_.-]", "_", self.study)
        return f"resume-{study}-{number:04d}-{slot}.pt"

    def latest(self, trials: Sequence[FrozenTrial], number: int) -> str | None:
        """The id of the last whole copy of trial ``number``'s checkpoint: recorded by the last
        of the trials that continue it to write one."""
        ids = [
            rec.resume_copy
            for t in trials
            if continued(t) == number and (rec := TrialRecord.from_trial(t)).resume_copy
        ]
        return ids[-1] if ids else None

    def discard(self, number: int) -> None:
        """Delete both copies: the trial ended, nothing continues it."""
        for slot in (0, 1):
            with contextlib.suppress(ArtifactNotFound):
                self.store.remove(self.artifact_id(number, slot))

    def of_trial(self, trial: optuna.Trial) -> TrialCopy:
        """The copies ``trial`` (running) reads and writes."""
        return TrialCopy(self, trial, continued(trial))


@dataclass
class TrialCopy:
    """A running trial's side of the store (``trial.resume.Shared``)."""

    store: ResumeStore
    trial: optuna.Trial
    number: int
    """The ``continued`` number its checkpoint is kept under."""
    last: str | None = None
    """The id of the last whole copy; looked up in the study at first use."""

    def _last(self) -> str | None:
        if self.last is None:
            trials = self.trial.study.get_trials(deepcopy=False)
            self.last = self.store.latest(trials, self.number)
        return self.last

    def fetch(self, dest: Path) -> bool:
        artifact = self._last()
        if artifact is None:
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)  # a machine that never wrote one
        try:
            with self.store.store.open_reader(artifact) as reader:
                write_atomically(dest, lambda f: shutil.copyfileobj(reader, f))
        except ArtifactNotFound:
            return False  # removed since: its trial ended on another machine
        return True

    def publish(self, path: Path) -> None:
        last = self._last()
        slot = 1 if last == self.store.artifact_id(self.number, 0) else 0
        artifact = self.store.artifact_id(self.number, slot)
        try:
            with path.open("rb") as f:
                self.store.store.write(artifact, f)
        except OSError as e:
            # The trial goes on: its checkpoint in the output folder still holds on this
            # machine, and its record (``resume_copy_error``) says why others cannot read it.
            record(self.trial, resume_copy_error=first_line(e))
            return
        record(self.trial, resume_copy=artifact)
        self.last = artifact
