"""In-trial checkpoints: a long trial saves its training state every few minutes
(``--checkpoint-every``), and the trial run again after an interruption continues from there.

What is saved is everything the next epoch depends on: the weights, the optimizer's and the
gradient scaler's state, the running average, the random number generators (the global one
that draws dropout masks, the shuffling one, the augmentation one), and the loop's own record
(best epoch, its weights, patience, history). Continued from it, a trial ends with the same
weights and value as if it had never stopped (bit for bit on the CPU with one thread).

The file holds tensors and plain values only, read with ``weights_only=True``: no pickled code.
A ``Shared`` copy (``search.resume_store``: ``--checkpoint-store``) lets another machine continue.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from autotune.paths import write_atomically

FORMAT = "autotune-resume-1"

Generators = tuple[torch.Generator | None, ...]
"""The fit's own generators (shuffling, augmentation): None where it has no such draw."""


class Shared(Protocol):
    """A copy of the file where other machines read it."""

    def fetch(self, dest: Path) -> bool:
        """Write the latest copy to ``dest``; False when there is none."""
        ...

    def publish(self, path: Path) -> None:
        """Copy the file just written at ``path``."""
        ...


@dataclass
class Resume:
    """One trial's resume file: when to write it, and the state read back from it."""

    path: Path
    every: float
    """Seconds of the fit between two checkpoints (0: after every epoch). A fit shorter than
    that never writes one."""
    identity: dict[str, Any]
    """What the trial trains and which trial it is (its configuration, parent, when it first
    started...): a file written for other values is not continued from, the fit starts over."""
    clock: Callable[[], float] = time.monotonic
    shared: Shared | None = None
    """Also written there, and continued from when its copy is further on than this file."""
    resumed_after: int = 0
    """The epoch the fit continued after (0: it started from the beginning)."""
    _since: float | None = field(default=None, repr=False)

    @property
    def _stamp(self) -> str:
        # Compared as JSON text: whatever the values' types (a tuple, a Path), and a string
        # is all the safe loader has to read.
        return json.dumps(self.identity, sort_keys=True, default=str)

    def restore(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        kept: AveragedModel | None,
        generators: Generators,
        device: torch.device,
    ) -> dict[str, Any] | None:
        """Put the saved state into the fit's objects and return the loop's record (``epoch``
        and what ``save`` was given), or None when there is no file for this trial."""
        self._since = self.clock()
        saved = self._read(self.path)
        if self.shared is not None:
            # Another machine may have continued the trial further than this one's file.
            copy = self.path.with_name(f"{self.path.stem}.shared.pt")
            if self.shared.fetch(copy):
                theirs = self._read(copy)
                copy.unlink()
                if theirs is not None and (saved is None or _epoch(theirs) > _epoch(saved)):
                    saved = theirs
        if saved is None:
            return None
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scaler is not None and saved.get("scaler") is not None:
            scaler.load_state_dict(saved["scaler"])
        if kept is not None:
            kept.load_state_dict(saved["kept"])
        for generator, state in zip(generators, saved["generators"], strict=True):
            if generator is not None:
                generator.set_state(state)
        torch.set_rng_state(saved["rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        loop: dict[str, Any] = saved["loop"]
        loop["best_state"] = {k: v.to(device) for k, v in loop["best_state"].items()}
        self.resumed_after = loop["epoch"]
        return loop

    def _read(self, path: Path) -> dict[str, Any] | None:
        """The state in ``path`` when it is a file written for this trial, else None."""
        if not path.is_file():
            return None
        saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("format") != FORMAT or saved.get("identity") != self._stamp:
            return None
        return saved

    def due(self) -> bool:
        """Whether ``every`` seconds have passed since the fit started or last saved."""
        return self._since is None or self.clock() - self._since >= self.every

    def save(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        kept: AveragedModel | None,
        generators: Generators,
        loop: dict[str, Any],
    ) -> None:
        """Write the state after an epoch (``loop``: its number as ``epoch``, the best epoch's
        weights as ``best_state``, and the rest of the loop's record), whole or not at all."""
        device = next(iter(model.state_dict().values()), torch.zeros(0)).device
        saved = {
            "format": FORMAT,
            "identity": self._stamp,
            "model": _cpu(model.state_dict()),
            "optimizer": _cpu(optimizer.state_dict()),
            "scaler": None if scaler is None else scaler.state_dict(),
            "kept": None if kept is None else _cpu(kept.state_dict()),
            "generators": [None if g is None else g.get_state() for g in generators],
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "loop": {**loop, "best_state": _cpu(loop["best_state"])},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, lambda f: torch.save(saved, f))
        if self.shared is not None:
            self.shared.publish(self.path)
        self._since = self.clock()


def _epoch(saved: dict[str, Any]) -> int:
    epoch: int = saved["loop"]["epoch"]
    return epoch


def _cpu(value: Any) -> Any:
    """``value`` with every tensor in it copied to the CPU (a state dict, an optimizer's)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu(v) for v in value)
    return value
