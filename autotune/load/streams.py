"""Inputs too large to hold: ``Streamed``, a split's inputs read batch by batch through a
``DataLoader`` (worker processes, pinned memory on CUDA, prefetching).

A ``Streamed`` stands where a split's input tensor would: it has ``len``, ``shape``, ``ndim``, and
indexing it (an int, a slice, a list or tensor of indices) reads those samples into a tensor, so
code that takes a few samples (the analysis, the cost measurement, the example that traces the
model) reads the same either way. Loops over the whole split go through ``loader``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from autotune.errors import DataError

RESIDENT_LIMIT_MB = 512
"""Data whose decoded float32 inputs would take more than this stays on disk and streams
(``AUTOTUNE_RESIDENT_MB`` overrides it); smaller data is held as tensors."""
STREAM_BATCH = 128
"""Batch size of evaluation passes over a streamed split."""
SPREAD = 64
"""Inputs of a streamed split read up front: checked for NaN and hashed into the fingerprint."""


def resident_limit() -> int:
    """The size in bytes above which data streams."""
    text = os.environ.get("AUTOTUNE_RESIDENT_MB", str(RESIDENT_LIMIT_MB))
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = math.nan
    if not 0 <= megabytes < math.inf:  # 'abc' was a ValueError traceback
        raise DataError(
            f"AUTOTUNE_RESIDENT_MB={text!r} is not a size in megabytes: give one like "
            f"{RESIDENT_LIMIT_MB}, or unset it"
        )
    return int(megabytes * 2**20)


def default_workers() -> int:
    """Loader worker processes: up to 4, leaving one core to the training process."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class Streamed:
    """A split's inputs: items ``indices`` of ``source``, a Dataset of ``(input, label)`` pairs."""

    def __init__(
        self,
        source: Dataset,
        indices: Sequence[int],
        sample_shape: tuple[int, ...],
        workers: int | None = None,
    ) -> None:
        self.source = source
        self.indices = list(indices)
        self.sample_shape = tuple(sample_shape)
        self.workers = default_workers() if workers is None else workers

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.sample_shape))

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __getitem__(self, key: int | slice | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Read samples into a tensor (a few: whole passes go through ``loader``)."""
        if isinstance(key, int):
            return self._read(self.indices[key])
        if isinstance(key, slice):
            positions = range(len(self))[key]
        else:
            positions = torch.as_tensor(key).reshape(-1).tolist()  # type: ignore[assignment]
        return torch.stack([self._read(self.indices[p]) for p in positions])

    def spread(self, count: int = SPREAD) -> list[int]:
        """Up to ``count`` positions spread evenly over the split."""
        step = max(1, len(self) // count)
        return list(range(0, len(self), step))[:count]

    def _read(self, index: int) -> torch.Tensor:
        return torch.as_tensor(self.source[index][0], dtype=torch.float32)

    def subset(self, positions: Sequence[int] | torch.Tensor) -> Streamed:
        """The samples at ``positions`` of this split, still on disk."""
        chosen = torch.as_tensor(positions).reshape(-1).tolist()
        return Streamed(
            self.source, [self.indices[p] for p in chosen], self.sample_shape, self.workers
        )

    def joined(self, other: Streamed) -> Streamed:
        """This split's samples followed by ``other``'s (the same source)."""
        if other.source is not self.source:
            raise ValueError("only splits of one source can be joined")
        indices = self.indices + other.indices
        return Streamed(self.source, indices, self.sample_shape, self.workers)

    def loader(self, batches: Iterable[Sequence[int]], device: torch.device) -> DataLoader:
        """A loader of input batches made of the samples at each of ``batches``' positions, in
        order. ``batches`` may be changed between passes (see ``BatchOrder``): the workers stay
        up for the next pass."""
        workers = self.workers
        return DataLoader(
            _Inputs(self),
            batch_sampler=batches,  # type: ignore[arg-type]
            num_workers=workers,
            pin_memory=device.type == "cuda",
            prefetch_factor=4 if workers else None,
            persistent_workers=workers > 0,
            # Its own: a loader draws its workers' seed from the global generator otherwise,
            # shifting the dropout masks after it, on the first pass only with persistent
            # workers; a trial continued from an in-trial checkpoint starts its loader later.
            generator=torch.Generator().manual_seed(0),
        )

    def __repr__(self) -> str:
        return f"Streamed({len(self)} samples of shape {self.sample_shape}, {self.workers} workers)"


class _Inputs(Dataset):
    def __init__(self, split: Streamed) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, position: int) -> torch.Tensor:
        return self.split._read(self.split.indices[position])


class BatchOrder:
    """A batch sampler whose batches are set before each pass over the data."""

    def __init__(self, batches: Sequence[Sequence[int]] = ()) -> None:
        self.batches = [list(b) for b in batches]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def inputs_join(a: Any, b: Any) -> Any:
    """Two splits' inputs, one after the other: tensors or ``Streamed``."""
    if isinstance(a, Streamed):
        return a.joined(b)
    return torch.cat([a, b])
