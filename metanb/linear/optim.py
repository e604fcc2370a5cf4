"""One quasi-Newton minimiser for the non-convex factored objectives (LoRA-ML, symmetric adapters).

Full-batch L-BFGS (two-loop recursion, memory 20) with a backtracking Armijo line search, written
out in a few lines instead of ``torch.optim.LBFGS`` (whose construction imports the compiler stack,
seconds of start-up for a sub-second solve). At d ≈ 20 it reaches a first-order stationary point to
~1e-10 in a few hundred cheap iterations, where fixed-step gradient descent needs a step tuned to
the (changing) curvature. Gradients are written out by hand from the risk's formula (see
:mod:`metanb.linear.data`), so the code is the formula.

Stopping rule (the documented one for every caller): stop when the largest gradient entry is
``≤ tol_grad``, or an iteration changes the loss, or moves every parameter, by less than
``tol_change``, or after ``max_iter`` iterations.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

LossAndGrads = Callable[[Sequence[Tensor]], tuple[Tensor, Sequence[Tensor]]]

ARMIJO = 1e-4  # sufficient-decrease constant of the line search
MAX_HALVINGS = 60


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch ops on one thread, then restore the caller's setting.

    The matrices here are tiny (d ≈ 20): intra-op threads only add synchronisation, and on a shared
    CPU each parallel op can stall for milliseconds (measured: a LoRA-ML solve takes 0.03 s on one
    thread and over 2 s on two threads of a loaded 2-core machine).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _two_loop(g: Tensor, pairs: deque[tuple[Tensor, Tensor, float]]) -> Tensor:
    """L-BFGS direction ``-H g`` from the stored (s, y, 1/yᵀs) pairs."""
    q = g.clone()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * float(s @ q)
        q -= a * y
        alphas.append(a)
    if pairs:
        s, y, _ = pairs[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
        q += (a - rho * float(y @ q)) * s
    return -q


def minimise(
    params: Sequence[Tensor],
    loss_and_grads: LossAndGrads,
    max_iter: int = 2000,
    tol_grad: float = 1e-10,
    tol_change: float = 1e-16,
    memory: int = 20,
) -> tuple[list[Tensor], list[float]]:
    """Minimise ``loss_and_grads`` from ``params``; returns (params, loss at every evaluation)."""
    with single_threaded():
        return _minimise(params, loss_and_grads, max_iter, tol_grad, tol_change, memory)


def _minimise(params, loss_and_grads, max_iter, tol_grad, tol_change, memory):
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def unflat(x: Tensor) -> list[Tensor]:
        return [part.view(shape) for part, shape in zip(x.split(sizes), shapes, strict=True)]

    def evaluate(x: Tensor) -> tuple[float, Tensor]:
        loss, grads = loss_and_grads(unflat(x))
        history.append(float(loss))
        return float(loss), torch.cat([g.reshape(-1) for g in grads])

    history: list[float] = []
    x = torch.cat([p.detach().reshape(-1) for p in params]).clone()
    f, g = evaluate(x)
    pairs: deque[tuple[Tensor, Tensor, float]] = deque(maxlen=memory)
    for _ in range(max_iter):
        if float(g.abs().max()) <= tol_grad:
            break
        d = _two_loop(g, pairs)
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction: restart from the gradient
            pairs.clear()
            d, slope = -g, -float(g @ g)
        t = 1.0 if pairs else min(1.0, 1.0 / float(g.abs().sum()))
        for _ in range(MAX_HALVINGS):
            f_new, g_new = evaluate(x + t * d)
            if f_new <= f + ARMIJO * t * slope:
                break
            t /= 2
        else:
            break  # no decrease found: at the floating-point floor of this objective
        s, y = t * d, g_new - g
        if float(y @ s) > 1e-12 * float(y @ y):
            pairs.append((s, y, 1.0 / float(y @ s)))
        done = abs(f - f_new) < tol_change or float(s.abs().max()) < tol_change
        x, f, g = x + s, f_new, g_new
        if done:
            break
    return unflat(x), history
