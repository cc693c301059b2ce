"""Where the trainer runs: the device, and mixed precision on CUDA."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor

from stream.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; an unavailable CUDA is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available")
    return torch.device(name)


class MixedPrecision:
    """CUDA autocast (bf16 where supported, else fp16 with a gradient scaler); off elsewhere.

    >>> amp = MixedPrecision(torch.device("cpu"), enabled=True)
    >>> amp.dtype is None
    True
    """

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.device = device
        amp = enabled and device.type == "cuda"
        bf16 = amp and torch.cuda.is_bf16_supported()
        self.dtype = (torch.bfloat16 if bf16 else torch.float16) if amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def autocast(self) -> AbstractContextManager[Any]:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def step(
        self,
        loss: Tensor | None,
        optimizer: torch.optim.Optimizer,
        reduce: Callable[[], None] | None = None,
    ) -> None:
        """Backward through the (scaled) loss and one optimiser step; ``reduce`` runs
        between them (a job's gradient all-reduce, :mod:`stream.learn.ranks`). No loss:
        a rank with nothing to train on this step joins it with no gradients."""
        optimizer.zero_grad(set_to_none=True)
        scaled = self.scaler.scale(
            loss if loss is not None else torch.zeros((), device=self.device)
        )
        if loss is not None:
            torch.autograd.backward(scaled)
        if reduce is not None:
            reduce()
        self.scaler.step(optimizer)
        self.scaler.update()
