"""What a multi-task LoRA injection is: one dataclass, printable, every field with its why.

Mirrors PEFT's ``LoraConfig`` where the two overlap (``rank`` is PEFT's ``r``, ``alpha`` its
``lora_alpha``, ``target_modules`` matches the same way), so an adapter trained here exports
to PEFT's format without translation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from metanb.errors import MetanbError


@dataclass(frozen=True)
class MultiLoraConfig:
    """T rank-``rank`` adapters on every layer (``nn.Linear``, GPT-2 ``Conv1D``) whose name
    matches ``target_modules``; ``r``, ``lora_alpha`` and ``lora_dropout`` read as in PEFT."""

    num_tasks: int = field(metadata={"help": "T, the number of adapters (one per task)."})
    rank: int = field(default=8, metadata={"help": "r, the rank of every adapter."})
    alpha: float = field(
        default=16.0,
        metadata={"help": "The update is scaled by alpha / rank, as in PEFT (lora_alpha)."},
    )
    dropout: float = field(
        default=0.0, metadata={"help": "Dropout on the adapter's input (PEFT's lora_dropout)."}
    )
    target_modules: str | tuple[str, ...] = field(
        default=("query", "value"),
        metadata={
            "help": "Like PEFT: a string is a regex that must match the full module name; "
            "a sequence holds names matched exactly or as a dotted suffix."
        },
    )
    symmetric: bool = field(
        default=False,
        metadata={
            "help": "Use U Uᵀ (square layers only) instead of B A: the update of the theory "
            "chapters, A* + U_t U_tᵀ."
        },
    )
    train_base: bool = field(
        default=True,
        metadata={
            "help": "Keep the model's own parameters trainable (LoRA-ML retrains the base); "
            "False freezes every non-adapter parameter, like PEFT."
        },
    )
    init_scale: float = field(
        default=0.1,
        metadata={
            "help": "Symmetric adapters only: U starts as init_scale times PEFT's kaiming-uniform "
            "init. It cannot start at 0, where the gradient of U Uᵀ vanishes (a saddle)."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, Sequence) and not isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.num_tasks < 1:
            raise MetanbError(f"num_tasks must be at least 1, got {self.num_tasks}")
        if self.rank < 1:
            raise MetanbError(f"rank must be at least 1, got {self.rank}")
        if self.alpha <= 0:
            raise MetanbError(f"alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise MetanbError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.init_scale <= 0:
            raise MetanbError(f"init_scale must be positive, got {self.init_scale}")
        if not self.target_modules:
            raise MetanbError("target_modules is empty; name at least one nn.Linear module")

    @property
    def r(self) -> int:
        """PEFT's name for ``rank``."""
        return self.rank

    @property
    def lora_alpha(self) -> float:
        """PEFT's name for ``alpha``."""
        return self.alpha

    @property
    def lora_dropout(self) -> float:
        """PEFT's name for ``dropout``."""
        return self.dropout

    @property
    def scaling(self) -> float:
        """The factor alpha / rank that multiplies every adapter's update."""
        return self.alpha / self.rank
