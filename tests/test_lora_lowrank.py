"""metanb.lora.lowrank: the grouped low-rank product and the fused adapted linear.

Both have hand-written backwards (for speed); each must equal plain autograd on the textbook
formula, for every input that needs a gradient and for none that does not. The adapted layer
must take the fused path only where it computes what ``base_layer(x)`` would (no hooks, no
subclass forward, no dropout, no autocast), and route the adapters it would route anyway.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from metanb.lora import MultiLoraConfig, MultiLoraLinear, TaskRouting
from metanb.lora.lowrank import adapted_linear, grouped_low_rank

G, N, IN, OUT, R = 3, 5, 6, 4, 2


def factors(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(G, R, IN, generator=g, dtype=torch.float64, requires_grad=True),
            torch.randn(G, OUT, R, generator=g, dtype=torch.float64, requires_grad=True))


def textbook(h: torch.Tensor, A: torch.Tensor, B: torch.Tensor, s: float) -> torch.Tensor:
    """scaling * B_g A_g h_i, row by row, group by group."""
    return torch.stack([torch.stack([s * B[g] @ (A[g] @ h[g, i]) for i in range(h.shape[1])])
                        for g in range(h.shape[0])])


def grads(y: torch.Tensor, inputs: list[torch.Tensor], seed: int = 1) -> list[torch.Tensor]:
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    return list(torch.autograd.grad(y, inputs, w))


@pytest.mark.parametrize("scaling", [1.0, 2.5])
def test_grouped_low_rank_equals_the_textbook_product_and_its_gradients(scaling):
    A, B = factors()
    h = torch.randn(G, N, IN, dtype=torch.float64, requires_grad=True)
    got, want = grouped_low_rank(h, A, B, scaling), textbook(h, A, B, scaling)
    torch.testing.assert_close(got, want)
    for a, b in zip(grads(got, [h, A, B]), grads(want, [h, A, B]), strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda h, A, B: grouped_low_rank(h, A, B, scaling),
                                    (h, A, B))


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("frozen", ["nothing", "base", "input"])
def test_adapted_linear_equals_base_plus_update_with_exactly_the_needed_gradients(
        kind, bias, frozen):
    torch.manual_seed(0)
    base = (nn.Linear(IN, OUT, bias=bias) if kind == "linear" else Conv1D(OUT, IN)).double()
    if kind == "conv1d" and not bias:
        base.bias = None
    A, B = factors()
    x = torch.randn(G * N, 2, IN, dtype=torch.float64, requires_grad=frozen != "input")
    if frozen == "base":
        base.requires_grad_(False)
    params = [p for p in (base.weight, base.bias) if p is not None and p.requires_grad]
    inputs = [t for t in (x,) if t.requires_grad] + params + [A, B]

    got = adapted_linear(x, base.weight, base.bias, A, B, 1.5, in_out=kind == "conv1d")
    plain = (x @ base.weight + (0 if base.bias is None else base.bias)  # Conv1D has no
             if kind == "conv1d" else base(x))  # bias-free form of its own
    want = plain + textbook(x.reshape(G, -1, IN), A, B, 1.5).reshape(G * N, 2, OUT)
    torch.testing.assert_close(got, want)
    for a, b in zip(grads(got, inputs), grads(want, inputs), strict=True):
        torch.testing.assert_close(a, b)


def test_adapted_linear_passes_gradcheck():
    base = nn.Linear(IN, OUT).double()
    A, B = factors()
    x = torch.randn(G * N, IN, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, W, b, A, B: adapted_linear(x, W, b, A, B, 0.7), (x, base.weight, base.bias,
                                                                   A, B))


def test_grouped_low_rank_under_cpu_autocast_runs_in_its_dtype_and_back():
    A, B = (f.detach().float().requires_grad_() for f in factors())
    h = torch.randn(G, N, IN, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = grouped_low_rank(h, A, B, 2.0)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert h.grad.dtype == A.grad.dtype == B.grad.dtype == torch.float32
    torch.testing.assert_close(y.float(), textbook(h, A, B, 2.0), rtol=2e-2, atol=5e-2)


def layer_with(base: nn.Module, dropout: float = 0.0) -> MultiLoraLinear:
    layer = MultiLoraLinear(base, MultiLoraConfig(num_tasks=3, rank=R, dropout=dropout))
    with torch.no_grad():
        layer.lora_B.normal_()
    layer.task_ids = torch.tensor([0, 0, 1, 1, 2, 2])
    return layer


class Doubled(nn.Linear):
    """A subclass whose forward is not nn.Linear's: the adapter must still call it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_the_layer_honours_what_its_base_does_beyond_a_plain_linear():
    torch.manual_seed(0)
    x = torch.randn(6, 3, IN)
    plain = layer_with(nn.Linear(IN, OUT))
    assert plain._fusable(x, plain.lora_A)
    update = plain(x) - plain.base_layer(x)

    subclass = layer_with(Doubled(IN, OUT))
    subclass.load_state_dict(plain.state_dict())
    assert not subclass._fusable(x, subclass.lora_A)
    torch.testing.assert_close(subclass(x), 2 * plain.base_layer(x) + update)

    hooked = layer_with(nn.Linear(IN, OUT))
    hooked.load_state_dict(plain.state_dict())
    handle = hooked.base_layer.register_forward_hook(lambda m, args, out: out + 1.0)
    assert not hooked._fusable(x, hooked.lora_A)
    torch.testing.assert_close(hooked(x), plain(x) + 1.0)
    handle.remove()
    assert hooked._fusable(x, hooked.lora_A)

    assert not layer_with(nn.Linear(IN, OUT), dropout=0.1)._fusable(x, plain.lora_A)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not plain._fusable(x, plain.lora_A)


@pytest.mark.parametrize("ids, shares", [
    ([0, 0, 1, 1, 2, 2], "itself"),  # every task, in order: the adapter tensors themselves
    ([1, 1, 2, 2], "view"),  # consecutive tasks: a slice of them
    ([2, 2, 0, 0], "copy"),  # any other set: a gather of u adapters
    ([0, 2, 0], "copy"),  # not contiguous: one adapter per example
])
def test_groups_share_the_adapter_storage_where_they_can(ids, shares):
    A, B = torch.randn(3, R, IN), torch.randn(3, OUT, R)
    routing = TaskRouting.build(ids, num_tasks=3)
    A_, B_ = routing.groups(A, B)
    assert (A_ is A) == (shares == "itself")
    assert (A_.untyped_storage().data_ptr() == A.untyped_storage().data_ptr()) == (
        shares != "copy")
    runs = routing.runs or [(t, i, i + 1) for i, t in enumerate(ids)]
    assert [int(torch.nonzero((A == a).all(-1).all(-1))) for a in A_] == [t for t, _, _ in runs]
    assert B_.shape[0] == A_.shape[0]


def test_unequal_runs_do_not_fold_into_groups():
    assert TaskRouting.build([0, 0, 0, 1], num_tasks=2).groups(torch.randn(2, R, IN),
                                                              torch.randn(2, OUT, R)) is None
