"""A study's saved trial weights: a file per trial in a folder of the study's own, naming the
study and trial it holds, so that studies sharing an output folder never read each other's."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autotune.errors import unreadable_file
from autotune.paths import (
    checkpoint_path,
    checkpoints_dir,
    shared_checkpoints_dir,
    write_atomically,
)

FORMAT = "autotune-checkpoint-1"


class UnreadableCheckpoint(Exception):
    """A trial's checkpoint file that cannot be read (damaged on disk, or copied cut short):
    its trial is retrained from its parameters and seed instead, as when none was kept."""


@dataclass(frozen=True)
class Checkpoints:
    """Where a study's trials' weights are written, and where they may be read from."""

    folder: Path | None
    """``OUT/checkpoints/STUDY`` (``paths.checkpoints_dir``); None: nothing saved or read."""
    study: str = ""
    """The study name each file records; a file recording another study is never read."""
    shared: Path | None = None
    """``OUT/checkpoints``, where every study of the folder kept its weights before each had
    a folder of its own: read there too."""
    shared_is_ours: bool = False
    """Whether the storage holds this study alone, so that the shared folder's files, which
    name no study, can only be its own."""

    @classmethod
    def of(cls, out: Path, study: str, alone: bool = False) -> Checkpoints:
        """The study ``study``'s checkpoints in the output folder ``out``; ``alone``: the
        storage holds no other study."""
        return cls(checkpoints_dir(out, study), study, shared_checkpoints_dir(out), alone)

    def save(self, model: nn.Module, number: int) -> None:
        """Keep trial ``number``'s weights (on the CPU), with the study and trial they are of."""
        if self.folder is None:
            return
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        saved = {"format": FORMAT, "study": self.study, "trial": number, "state_dict": state}
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(checkpoint_path(self.folder, number), lambda f: torch.save(saved, f))

    def load(self, number: int, device: torch.device) -> dict[str, torch.Tensor] | None:
        """Trial ``number``'s weights when this study kept them, else None."""
        for folder in (self.folder, self.shared):
            path = None if folder is None else checkpoint_path(folder, number)
            if path is None or not path.is_file():
                continue
            try:
                saved = torch.load(path, map_location=device, weights_only=True)
            except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
                raise UnreadableCheckpoint(f"{str(path)!r}: {unreadable_file(e)}") from e
            if saved.get("format") == FORMAT:
                if saved.get("study") == self.study and saved.get("trial") == number:
                    return saved["state_dict"]
            elif folder == self.folder or self.shared_is_ours:
                return saved  # written before files named their study: its place says whose
        return None

    def prune(self, keep: set[int]) -> None:
        """Delete this study's checkpoints of trials not in ``keep``; then its folder, and the
        shared one, when empty."""
        for folder, ours in ((self.folder, True), (self.shared, self.shared_is_ours)):
            if folder is None or not folder.is_dir():
                continue
            if ours:
                kept = {checkpoint_path(folder, n) for n in keep}
                for path in folder.glob("trial_*.pt"):
                    if path not in kept:
                        path.unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()
