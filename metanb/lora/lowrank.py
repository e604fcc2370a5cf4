"""The grouped low-rank product ``scaling * B_g A_g h``, alone or fused into its base layer.

Rows come folded into g groups, (g, n, in), each group with its own factors A_g (r, in) and
B_g (out, r) (one group per task run, or per example). Two things make the plain autograd
version of ``base(x) + s * (h @ Aᵀ) @ Bᵀ`` slow on a CPU, and both are fixed here with a
hand-written backward (same FLOPs, same numbers to float rounding; the tests compare them):

- **Layouts.** The factors are thin, and the products autograd picks for the backward
  (``grad @ B``, an output only r wide; ``hᵀ @ grad``, the long row dimension contracted into
  an (in, r) block) run 3-5x slower than the same products taken with the rank as rows. Every
  product here keeps the rank first: the low-rank activation ``s · A h`` is (g, r, n), saved
  for the backward, and the scaling is applied to it, not to a full-width output.
- **Full-width temporaries.** A fresh (rows, width) buffer costs more than the arithmetic on it
  (first-touch page faults of freshly mapped memory, ~0.1 ms per 512 KiB), and the unfused
  layer makes three per call: the update, its sum with the base output, and the input gradient
  that autograd then adds to the base's. :func:`adapted_linear` owns the base ``nn.Linear`` /
  ``Conv1D`` product too and accumulates the update into the base's own output and input
  gradient in place (``baddbmm_``), so an adapted layer allocates exactly what its base does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable


class _GroupedLowRank(torch.autograd.Function):
    """(g, n, in) rows, (g, r, in) A, (g, out, r) B -> (g, n, out) ``scaling * B A h``."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                scaling: float) -> torch.Tensor:
        low = _low(h, A, scaling)
        ctx.save_for_backward(h, A, B, low)
        ctx.scaling = scaling
        return torch.bmm(low.mT, B.mT)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, A, B, low = ctx.saved_tensors
        need_h, need_A, need_B = ctx.needs_input_grad[:3]
        grad_h = grad_A = grad_B = None
        if need_h or need_A:
            back = _back(grad, B, ctx.scaling)
            grad_h = torch.bmm(back.mT, A) if need_h else None
            grad_A = torch.bmm(back, h) if need_A else None
        if need_B:
            grad_B = torch.bmm(low, grad).mT  # (g, out, r)
        return grad_h, grad_A, grad_B, None


class _AdaptedLinear(torch.autograd.Function):
    """``x @ W + bias`` plus the grouped update, written into the base output in place."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                A: torch.Tensor, B: torch.Tensor, scaling: float, in_out: bool) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        W = weight if in_out else weight.T  # (in, out)
        out = torch.mm(flat, W) if bias is None else torch.addmm(bias, flat, W)
        groups = A.shape[0]
        low = _low(flat.view(groups, -1, flat.shape[-1]), A, scaling)
        out.view(groups, -1, out.shape[-1]).baddbmm_(low.mT, B.mT)
        ctx.save_for_backward(flat, weight, A, B, low)
        ctx.scaling, ctx.in_out, ctx.shape = scaling, in_out, x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        flat, weight, A, B, low = ctx.saved_tensors
        need_x, need_W, need_bias, need_A, need_B = ctx.needs_input_grad[:5]
        groups = A.shape[0]
        g2 = grad.reshape(-1, grad.shape[-1])  # (N, out)
        g3 = g2.view(groups, -1, g2.shape[-1])
        grad_x = grad_W = grad_bias = grad_A = grad_B = None
        back = _back(g3, B, ctx.scaling) if need_x or need_A else None
        if need_x:
            grad_x = torch.mm(g2, weight.T if ctx.in_out else weight)  # (N, in)
            grad_x.view(groups, -1, grad_x.shape[-1]).baddbmm_(back.mT, A)
            grad_x = grad_x.view(ctx.shape)
        if need_W:
            grad_W = torch.mm(flat.T, g2) if ctx.in_out else torch.mm(g2.T, flat)
        if need_bias:
            grad_bias = g2.sum(0)
        if need_A:
            grad_A = torch.bmm(back, flat.view(groups, -1, flat.shape[-1]))
        if need_B:
            grad_B = torch.bmm(low, g3).mT
        return grad_x, grad_W, grad_bias, grad_A, grad_B, None, None


def _low(h: torch.Tensor, A: torch.Tensor, scaling: float) -> torch.Tensor:
    """(g, r, n) ``scaling * A h``: the rank as rows."""
    low = torch.bmm(A, h.mT)
    return low.mul_(scaling) if scaling != 1.0 else low


def _back(grad: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
    """(g, r, n) ``scaling * Bᵀ grad``: the loss's gradient at ``A h``."""
    back = torch.bmm(B.mT, grad.mT)
    return back.mul_(scaling) if scaling != 1.0 else back


def grouped_low_rank(h: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                     scaling: float = 1.0) -> torch.Tensor:
    """``scaling * h @ A_gᵀ @ B_gᵀ`` for each group g: h (g, n, in), A (g, r, in), B (g, out, r).

    Under autocast the product runs in autocast's dtype (as ``torch.bmm`` would), so its hand
    written backward sees the dtypes its forward used.
    """
    kind = h.device.type
    if torch.is_autocast_enabled(kind):
        dtype = torch.get_autocast_dtype(kind)
        with torch.autocast(kind, enabled=False):
            return _GroupedLowRank.apply(h.to(dtype), A.to(dtype), B.to(dtype), scaling)
    return _GroupedLowRank.apply(h, A, B, scaling)


def adapted_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   A: torch.Tensor, B: torch.Tensor, scaling: float,
                   in_out: bool = False) -> torch.Tensor:
    """``x Wᵀ + bias`` (``x W + bias`` for an (in, out) ``Conv1D`` weight, ``in_out=True``) plus
    ``scaling * B_g A_g x`` for rows x folded into A's g groups. The caller checks it may: same
    dtype everywhere, no autocast, no dropout on the adapters' input."""
    return _AdaptedLinear.apply(x, weight, bias, A, B, scaling, in_out)
