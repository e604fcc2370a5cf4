"""The hidden-test check behind the assignments' "write it yourself" rule."""

from __future__ import annotations

import sys

import pytest
import torch

import metanb.linear as lin
from metanb.assignments.rules import AUTOGRAD, PACKAGE, RuleError, follows_rules, is_forbidden

truth = lin.make_ground_truth(d=5, k=1, tasks=3, seed=0)


def own_sr(A_star, U_star):
    return A_star + (U_star @ U_star.transpose(-1, -2)).mean(0)


def test_own_work_passes_and_returns_the_result():
    out = follows_rules(own_sr, truth.A_star, U_star=truth.U_star)
    assert torch.allclose(out, lin.sr_limit(truth.A_star, truth.U_star))


@pytest.mark.parametrize(
    "cheat",
    [
        lambda A, U: lin.sr_limit(A, U),  # through the module
        lin.sr_limit,  # the package's function itself
        lambda A, U: lin.standard_retraining(lin.task_matrices(A, U)),  # another solver
    ],
)
def test_any_call_into_the_package_is_caught(cheat):
    with pytest.raises(RuleError, match=r"calls metanb\.linear\.") as info:
        follows_rules(cheat, truth.A_star, truth.U_star)
    assert "\n" not in str(info.value)


def test_an_alias_and_a_helper_in_between_change_nothing():
    from metanb.linear import sr_limit as innocent

    def helper(A, U):
        return innocent(A, U)

    def solution(A, U):
        return helper(A, U)

    with pytest.raises(RuleError, match=r"^solution calls metanb\.linear\.standard\.sr_limit,"):
        follows_rules(solution, truth.A_star, truth.U_star)


def test_autograd_is_caught_but_no_grad_is_allowed():
    def by_autograd(x):
        x = x.clone().requires_grad_(True)
        return torch.autograd.grad((x**2).sum(), x)[0]

    def by_backward(x):
        x = x.clone().requires_grad_(True)
        (x**2).sum().backward()
        return x.grad

    def by_hand(x):
        with torch.no_grad():
            return 2 * x

    x = torch.ones(3)
    for cheat in (by_autograd, by_backward):
        with pytest.raises(RuleError, match="torch"):
            follows_rules(cheat, x, forbid=PACKAGE + AUTOGRAD)
    assert torch.equal(follows_rules(by_hand, x, forbid=PACKAGE + AUTOGRAD), 2 * x)


def test_prefixes_match_whole_names_only():
    assert is_forbidden("torch.autograd.grad", AUTOGRAD)
    assert not is_forbidden("torch.autograd.grad_mode.no_grad.__enter__", AUTOGRAD)
    assert is_forbidden("metanb.linear.lora_ml.lora_ml", PACKAGE)
    assert not is_forbidden("metanbx.f", PACKAGE)


def test_the_previous_profiler_is_restored_even_after_an_error():
    seen = []

    def outer(frame, event, arg):
        seen.append(event)

    def boom():
        raise ValueError("student bug")

    sys.setprofile(outer)
    try:
        with pytest.raises(ValueError, match="student bug"):
            follows_rules(boom)
        assert sys.getprofile() is outer
    finally:
        sys.setprofile(None)
