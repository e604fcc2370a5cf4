"""Mixed precision with torch's public API: autocast for the forward, a gradient scaler for
fp16 (bf16 needs none). Kept out of ``accelerate``'s process-wide state on purpose: that state
cannot change once set, so runs of different precision could not share one process (a notebook,
a benchmark, the test suite)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from metanb.errors import MetanbError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Precision:
    """What one run's ``mixed_precision`` means on its device."""

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode == "fp16" and device.type != "cuda":
            raise MetanbError("mixed_precision=fp16 needs a CUDA GPU; use bf16 or no on the CPU")
        self.mode, self.device = mode, device
        self.scaler = (torch.amp.GradScaler(device.type) if mode == "fp16" else None)

    def autocast(self) -> AbstractContextManager[Any]:
        if self.mode == "no":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.mode])

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients back to their true scale (before clipping)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
