"""The adapted layer: a base ``nn.Linear`` (or GPT-2 ``Conv1D``) plus T low-rank adapters,
one chosen per example.

For an example of task t the layer computes

    y = base(x) + (alpha / r) * B_t A_t x            (asymmetric, like PEFT)
    y = base(x) + (alpha / r) * U_t U_tᵀ x           (symmetric, the theory's A* + U_t U_tᵀ)

for every example of a mixed batch in one pass (see :mod:`metanb.lora.routing` for how the ids
arrive and how the rows are split between adapters). ``A_t`` is (r, in) and ``B_t`` (out, r)
whatever the base's weight layout: GPT-2's ``Conv1D`` stores its weight as (in, out), which
only matters when merging an update into it (PEFT's ``fan_in_fan_out``).

Like PEFT's tuner layers the adapted layer shows the base's ``weight`` and ``bias``, so model
code that reads ``self.q_proj.weight.dtype`` keeps working.

Speed: when the base is a plain ``nn.Linear`` or ``Conv1D`` (no hooks, no subclass forward),
without adapter dropout or autocast, base and update are one fused product
(:func:`metanb.lora.lowrank.adapted_linear`) that allocates no more than the base layer alone;
otherwise the base layer is called as it is and the update added to its output.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from metanb.errors import MetanbError
from metanb.lora.config import MultiLoraConfig
from metanb.lora.lowrank import adapted_linear
from metanb.lora.routing import TaskRouting, mixed_update


def conv1d_type() -> type[nn.Module] | None:
    """``transformers.pytorch_utils.Conv1D`` (GPT-2's projection), or None without transformers."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        return None
    return Conv1D


@functools.cache
def _plain_types() -> tuple[type[nn.Module], ...]:
    """The base layers whose forward :func:`adapted_linear` reproduces exactly."""
    conv1d = conv1d_type()
    return (nn.Linear,) if conv1d is None else (nn.Linear, conv1d)


def fan_in_fan_out(layers: Iterable[nn.Module]) -> bool:
    """PEFT's ``fan_in_fan_out`` for these layers: True when all store their weight as
    (in, out), as GPT-2's ``Conv1D`` does (PEFT needs it to merge an update into them)."""
    conv1d = conv1d_type()
    layers = list(layers)
    return conv1d is not None and bool(layers) and all(isinstance(m, conv1d) for m in layers)


def is_adaptable(module: nn.Module) -> bool:
    """Whether ``module`` is a layer an adapter can wrap: ``nn.Linear`` or a subclass, or GPT-2's
    ``Conv1D``, with a floating-point weight.

    Excluded: ``NonDynamicallyQuantizableLinear`` (the ``out_proj`` of ``nn.MultiheadAttention``,
    whose weight is read directly rather than through its forward, so an adapter there would be
    silently skipped) and quantized layers (integer weights).
    """
    conv1d = conv1d_type()
    if isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear):
        return False
    if not (isinstance(module, nn.Linear) or (conv1d is not None and isinstance(module, conv1d))):
        return False
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.is_floating_point()


def features(layer: nn.Module) -> tuple[int, int]:
    """(in, out) of an adaptable layer: ``nn.Linear`` weight is (out, in), ``Conv1D`` (in, out)."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    in_features, out_features = layer.weight.shape
    return int(in_features), int(out_features)


def check_rank(layer: nn.Module, rank: int, name: str = "") -> None:
    """A rank-r update of an (out x in) layer needs 1 <= r <= min(in, out)."""
    in_features, out_features = features(layer)
    width = min(in_features, out_features)
    if not 1 <= rank <= width:
        raise MetanbError(
            f"rank {rank} does not fit layer {name!r} ({in_features} -> "
            f"{out_features}); use 1 <= rank <= {width}"
        )


class MultiLoraLinear(nn.Module):
    """``base_layer`` plus ``num_tasks`` adapters; which one applies is set per example."""

    def __init__(self, base_layer: nn.Module, config: MultiLoraConfig, name: str = "") -> None:
        super().__init__()
        self.base_layer = base_layer
        self.name = name
        self.in_features, self.out_features = features(base_layer)
        self.num_tasks = config.num_tasks
        self.rank = config.rank
        self.scaling = config.scaling
        self.symmetric = config.symmetric
        # None when p = 0: no module call at all on the hot path
        self.dropout: nn.Module | None = nn.Dropout(config.dropout) if config.dropout > 0 else None
        self.routing: TaskRouting | None = None

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

    @property
    def weight(self) -> torch.Tensor:
        """The base layer's weight (its own layout: (out, in), or (in, out) for ``Conv1D``)."""
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The base layer's bias."""
        return self.base_layer.bias

    @property
    def task_ids(self) -> torch.Tensor | None:
        """The ids of the last root forward (or of ``use_tasks``), one per example."""
        return None if self.routing is None else self.routing.ids

    @task_ids.setter
    def task_ids(self, ids: torch.Tensor | Sequence[int] | None) -> None:
        self.routing = None if ids is None else TaskRouting.build(ids, self.num_tasks)

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
        """The (out, in) update that adapter ``task`` adds to the map x -> base(x), scaling
        included (transpose it to add it to a ``Conv1D`` weight)."""
        A, B = self.factors()
        return self.scaling * B[task] @ A[task]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing = self.routing
        if routing is None:
            raise MetanbError(
                f"layer {self.name!r} has {self.num_tasks} task adapters but no task ids; call "
                "the model with task_ids=... or run it inside `with use_tasks(model, task_ids):`"
            )
        n, b = x.shape[0], routing.size
        if n % b != 0:
            raise MetanbError(
                f"layer {self.name!r} got a leading dimension of {n}, which is not a multiple "
                f"of the {b} task ids; pass one id per example of the batch"
            )
        A, B = self.factors()
        if self._fusable(x, A):
            groups = routing.groups(A, B)
            if groups is not None:  # base and update in one product, no full-width temporary
                base = self.base_layer
                return adapted_linear(x, base.weight, base.bias, *groups, self.scaling,
                                      in_out=not isinstance(base, nn.Linear))
        out = self.base_layer(x)
        # rows of one example are consecutive (batch-first), so fold them together
        h = (x if self.dropout is None else self.dropout(x)).reshape(b, -1, self.in_features)
        delta = mixed_update(h.to(A.dtype), A, B, routing, self.scaling)
        return out.add_(delta.reshape(out.shape).to(out.dtype))

    def _fusable(self, x: torch.Tensor, A: torch.Tensor) -> bool:
        """Whether :func:`adapted_linear` computes exactly what ``base_layer(x)`` plus the
        update would: a plain ``nn.Linear`` or ``Conv1D`` (not a subclass, whose forward may
        differ) called with no hooks and no replaced forward (accelerate's offloading wraps
        it), one dtype, no autocast, no dropout on the adapters' input."""
        base = self.base_layer
        return (
            self.dropout is None
            and type(base) in _plain_types()
            and not (base._forward_hooks or base._forward_pre_hooks or "forward" in vars(base))
            and not (_global_forward_hooks or _global_forward_pre_hooks)
            and x.dtype == A.dtype == base.weight.dtype
            and not torch.is_autocast_enabled(x.device.type)
        )

    def extra_repr(self) -> str:
        kind = "U Uᵀ" if self.symmetric else "B A"
        return (
            f"in={self.in_features}, out={self.out_features}, tasks={self.num_tasks}, "
            f"rank={self.rank}, update={kind}, scaling={self.scaling:g}"
        )
