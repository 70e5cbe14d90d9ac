"""How a fine-tune uses an accelerator: mixed precision and memory format, decided per device.

``--amp auto`` trains in bfloat16 autocast on a CUDA card that supports it, in float16 with a
gradient scaler on one that does not, and in plain float32 on the CPU. ``--channels-last auto``
stores conv nets' activations channels-last on CUDA (tensor cores read NHWC without
transposes), never on the CPU. Every switch off is the float32 loop itself: on the CPU the
results stay bit-identical to a loop without these switches (``tests/test_accel.py``).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from autotune.errors import AutotuneError


@dataclass(frozen=True)
class Accel:
    """What a fit does on its device, resolved from the user's switches by ``plan``."""

    dtype: torch.dtype | None = None
    """Autocast dtype, or None for float32."""
    channels_last: bool = False

    @property
    def scales_gradients(self) -> bool:
        """float16's range needs a gradient scaler; bfloat16's does not."""
        return self.dtype == torch.float16

    def describe(self) -> str:
        """One phrase for the first lines of a search."""
        precision = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + scaler"}
        parts = [precision[self.dtype] if self.dtype is not None else "fp32"]
        if self.channels_last:
            parts.append("channels-last")
        return ", ".join(parts)

    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        """Forward passes (and the loss) under autocast when a dtype was chosen."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(device.type, dtype=self.dtype):
            yield

    def scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """A gradient scaler for float16, else None (the plain backward and step)."""
        return torch.amp.GradScaler(device.type) if self.scales_gradients else None

    def model(self, model: nn.Module) -> nn.Module:
        """``model`` in the chosen memory format (in place, as ``Module.to`` does)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the chosen memory format (images only)."""
        if self.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x


def plan(
    device: torch.device, model: nn.Module, amp: str = "auto", channels_last: str = "auto"
) -> Accel:
    """The ``Accel`` for ``model`` on ``device`` under the user's switches (``--amp``,
    ``--channels-last``; their values are checked by ``SearchSettings.resolved``)."""
    cuda = device.type == "cuda"
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype == torch.float16 and not cuda:
        raise AutotuneError("--amp fp16 needs a CUDA device (on the CPU use bf16 or off)")
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    wanted = cuda if channels_last == "auto" else channels_last == "on"
    return Accel(dtype=dtype, channels_last=wanted and has_conv)


def release(device: torch.device) -> float | None:
    """Free what a finished trial left on ``device`` (its model, optimizer and activations are
    unreachable by now) and return the memory still allocated there, in MiB (CUDA only)."""
    if device.type != "cuda":
        return None
    gc.collect()  # reference cycles (optimizer <-> parameters) hold tensors until collected
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated(device) / 2**20
