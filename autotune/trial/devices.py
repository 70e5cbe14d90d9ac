"""Which device a search trains on: ``--device`` checked before any long work."""

from __future__ import annotations

import torch

from autotune.errors import AutotuneError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise AutotuneError(f"--device {name!r} is not a device: use auto, cpu or cuda[:N]") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AutotuneError(
            f"--device {name!r} asks for CUDA, but none is available: use cpu or auto"
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise AutotuneError(
            f"--device {name!r}: this machine has {count} CUDA device(s), cuda:0 to "
            f"cuda:{count - 1}"
        )
    if device.type not in ("cpu", "cuda") and not _usable(device):
        raise AutotuneError(
            f"--device {name!r}: this PyTorch has no usable {device.type} device: use auto, cpu "
            f"or cuda[:N]"
        )
    return device


def _usable(device: torch.device) -> bool:
    """Whether tensors can live on ``device`` (an MPS or XPU build, say): asked of PyTorch by
    placing an empty one, since each backend answers ``is_available`` differently."""
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError):
        return False
    return device.type != "meta"  # shapes without data: nothing trains there
