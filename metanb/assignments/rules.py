"""The assignments' rule "write it yourself", checked by their hidden tests.

Assignments 1 and 2 ask students to implement what the package already implements (SR's closed
form, Eckart-Young, the LoRA-ML gradients). A hidden test re-runs the student's function under
:func:`follows_rules`, which watches every Python function call the function makes (through a
profiler hook, so an alias, a ``from ... import``, a lambda or a helper in between changes
nothing) and fails with the name of the first forbidden function it saw. The check is about
*behaviour at run time*, not about the source text, so a comment or an unused import costs
nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, TypeVar

R = TypeVar("R")

# every function of the package (assignment 1: the solvers; assignment 2: lora_ml and its
# gradients): the functions students write need none of it
PACKAGE: tuple[str, ...] = ("metanb",)
# automatic differentiation: torch.autograd's entry points (Tensor.backward calls the second),
# its functional API and torch.func; torch.no_grad and friends stay allowed
AUTOGRAD: tuple[str, ...] = (
    "torch.autograd.grad",
    "torch.autograd.backward",
    "torch.autograd.functional",
    "torch._tensor.Tensor.backward",
    "torch.func",
    "torch._functorch",
)
_SELF = __name__


class RuleError(AssertionError):
    """A student's function called something the assignment's rules forbid."""


def qualified_name(frame: FrameType) -> str:
    """``module.Class.function`` of the code running in ``frame``."""
    module = frame.f_globals.get("__name__", "?")
    return f"{module}.{frame.f_code.co_qualname}"


def is_forbidden(name: str, forbid: Sequence[str]) -> bool:
    """Whether ``name`` is one of ``forbid`` or lies inside one of them (a dotted prefix)."""
    return any(name == f or name.startswith(f + ".") for f in forbid)


def follows_rules(function: Callable[..., R], *args: Any, forbid: Sequence[str] = PACKAGE,
                  **kwargs: Any) -> R:
    """Call ``function(*args, **kwargs)`` and return its result, or raise :class:`RuleError`
    naming the first function in ``forbid`` (dotted names or prefixes) it called, directly or
    through any chain of calls."""
    forbid = tuple(forbid)
    caught: list[str] = []
    previous = sys.getprofile()

    def watch(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and not caught:
            name = qualified_name(frame)
            if is_forbidden(name, forbid) and frame.f_globals.get("__name__") != _SELF:
                caught.append(name)

    sys.setprofile(watch)
    try:
        result = function(*args, **kwargs)
    finally:
        sys.setprofile(previous)
    if caught:
        who = getattr(function, "__name__", repr(function))
        raise RuleError(f"{who} calls {caught[0]}, which this assignment's rules forbid: "
                         "write that part yourself")
    return result
