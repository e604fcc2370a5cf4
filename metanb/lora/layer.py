"""The adapted Linear: a base ``nn.Linear`` plus T low-rank adapters, one chosen per example.

For an example of task t the layer computes

    y = W x + b + (alpha / r) * B_t A_t x            (asymmetric, like PEFT)
    y = W x + b + (alpha / r) * U_t U_tᵀ x           (symmetric, the theory's A* + U_t U_tᵀ)

for every example of a mixed batch in one pass: the adapters of the batch's examples are
gathered (``A[task_ids]``) and applied with two batched matmuls, so the extra cost is that of a
single rank-r adapter, whatever T is.

How the task ids reach the layer: :func:`metanb.lora.use_tasks` stores a LongTensor of shape
(batch,) on every adapted layer for the duration of a ``with`` block. Inside, a layer sees
inputs whose leading dimension is N. If N equals len(task_ids) each row is one example. If N is
a multiple, the model has flattened extra leading structure into the batch dimension in
example-major order, as Hugging Face multiple-choice models do ((batch, m, seq) -> (batch·m,
seq)); each id then applies to N / len(task_ids) consecutive rows, exactly as
``task_ids.repeat_interleave(N // len(task_ids))`` would say. Any other N is an error. This
assumes batch-first layouts (true for BERT/RoBERTa-style encoders), not packed sequences.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metanb.errors import MetanbError
from metanb.lora.config import MultiLoraConfig


def check_rank(layer: nn.Linear, rank: int, name: str = "") -> None:
    """A rank-r update of an (out x in) layer needs 1 <= r <= min(in, out)."""
    width = min(layer.in_features, layer.out_features)
    if not 1 <= rank <= width:
        raise MetanbError(
            f"rank {rank} does not fit layer {name!r} ({layer.in_features} -> "
            f"{layer.out_features}); use 1 <= rank <= {width}"
        )


class MultiLoraLinear(nn.Module):
    """``base_layer`` plus ``num_tasks`` adapters; which one applies is set per example."""

    def __init__(self, base_layer: nn.Linear, config: MultiLoraConfig, name: str = "") -> None:
        super().__init__()
        self.base_layer = base_layer
        self.name = name
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.num_tasks = config.num_tasks
        self.rank = config.rank
        self.scaling = config.scaling
        self.symmetric = config.symmetric
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.task_ids: torch.Tensor | None = None

        check_rank(base_layer, config.rank, name)
        if config.symmetric and self.in_features != self.out_features:
            raise MetanbError(
                f"symmetric adapters need a square layer, but {name!r} maps "
                f"{self.in_features} -> {self.out_features}; use symmetric=False or target "
                "only square layers"
            )
        weight = base_layer.weight
        shape = dict(device=weight.device, dtype=weight.dtype)
        T, r = config.num_tasks, config.rank
        if config.symmetric:
            self.lora_U = nn.Parameter(torch.empty(T, self.in_features, r, **shape))
        else:
            self.lora_A = nn.Parameter(torch.empty(T, r, self.in_features, **shape))
            self.lora_B = nn.Parameter(torch.empty(T, self.out_features, r, **shape))
        self.reset_parameters(config.init_scale)

    def reset_parameters(self, init_scale: float = 0.1) -> None:
        """PEFT's init: A kaiming-uniform, B = 0, so the adapted model starts equal to its base.

        A symmetric adapter has no B to zero, and U = 0 is a saddle of U Uᵀ (zero gradient),
        so U starts small instead: ``init_scale`` times the same kaiming-uniform init, i.e.
        uniform in ±init_scale/sqrt(d). The model starts *near* its base, not at it.
        """
        with torch.no_grad():
            if self.symmetric:
                for t in range(self.num_tasks):
                    # U_tᵀ has A's shape (r, d): same fan-in, same bound 1/sqrt(d)
                    nn.init.kaiming_uniform_(self.lora_U.data[t].T, a=math.sqrt(5))
                self.lora_U.mul_(init_scale)
            else:
                for t in range(self.num_tasks):
                    nn.init.kaiming_uniform_(self.lora_A.data[t], a=math.sqrt(5))
                nn.init.zeros_(self.lora_B)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All adapters as (A, B) with shapes (T, r, in) and (T, out, r): ΔW_t = B_t A_t.

        For symmetric adapters A = Uᵀ and B = U, which is also their PEFT export layout.
        """
        if self.symmetric:
            return self.lora_U.transpose(1, 2), self.lora_U
        return self.lora_A, self.lora_B

    def delta_weight(self, task: int) -> torch.Tensor:
        """The (out, in) update that adapter ``task`` adds to the base weight, scaling included."""
        A, B = self.factors()
        return self.scaling * B[task] @ A[task]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        ids = self.task_ids
        if ids is None:
            raise MetanbError(
                f"layer {self.name!r} has {self.num_tasks} task adapters but no task ids; run "
                "the model inside `with use_tasks(model, task_ids):`"
            )
        n, b = x.shape[0], ids.shape[0]
        if n % b != 0:
            raise MetanbError(
                f"layer {self.name!r} got a leading dimension of {n}, which is not a multiple "
                f"of the {b} task ids set by use_tasks; pass one id per example of the batch"
            )
        ids = ids.to(x.device)
        A, B = self.factors()
        A, B = A[ids], B[ids]  # (b, r, in), (b, out, r): the adapter of each example
        # rows of one example are consecutive (repeat_interleave order), so fold them together
        h = self.dropout(x).reshape(b, -1, self.in_features).to(A.dtype)
        delta = torch.bmm(torch.bmm(h, A.transpose(1, 2)), B.transpose(1, 2))
        return out.add_(delta.reshape(out.shape).to(out.dtype), alpha=self.scaling)

    def extra_repr(self) -> str:
        kind = "U Uᵀ" if self.symmetric else "B A"
        return (
            f"in={self.in_features}, out={self.out_features}, tasks={self.num_tasks}, "
            f"rank={self.rank}, update={kind}, scaling={self.scaling:g}"
        )
