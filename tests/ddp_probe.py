"""Run under ``torchrun --nproc_per_node 2``: what each data-parallel process sees.

Each process writes ``OUT/rank<r>.json`` (a rank-unique name, as the house rule asks of every
file a non-main process writes): the adapter it started from, its dropout masks, who saved
checkpoints, and its final weights. ``tests/test_retrain_distributed.py`` compares them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from metanb.retrain import Checkpoint, retrain


class Probe(nn.Module):
    """A Linear with dropout after it; records its adapters' start and every dropout mask."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 6)
        self.drop = nn.Dropout(0.5)
        self.masks: list[list[int]] = []
        self.first_adapter: list[float] | None = None

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        if self.first_adapter is None and hasattr(self.lin, "lora_A"):
            self.first_adapter = self.lin.lora_A.detach().flatten().tolist()
        h = self.drop(self.lin(x))
        self.masks.append((h == 0).flatten().int().tolist())
        return SimpleNamespace(loss=((h - labels) ** 2).mean())


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    saves: list[int] = []
    original = Checkpoint.save

    def spy(self: Checkpoint, state: dict) -> None:
        saves.append(state["step"])
        original(self, state)

    Checkpoint.save = spy  # type: ignore[method-assign]
    g = torch.Generator().manual_seed(0)
    tasks = [[{"x": torch.randn(4, 6, generator=g), "labels": torch.randn(4, 6, generator=g)}
              for _ in range(4)] for _ in range(2)]
    model = Probe()
    res = retrain(model, tasks, method="lora-ml", rank=2, steps=4, lr=1e-2, target_modules=["lin"],
                  seed=3, device="cpu", progress=False, inplace=True,
                  checkpoint=out / "retrain.ckpt", checkpoint_every=2)
    payload = {"first_adapter": model.first_adapter, "masks": model.masks, "saves": saves,
               "final": [p.detach().flatten().tolist() for p in res.model.parameters()],
               "losses": [h["loss"] for h in res.history]}
    (out / f"rank{rank}.json").write_text(json.dumps(payload))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
