"""A back-of-the-envelope GPU memory estimate of one retraining step, printed by ``--dry-run``.

Why: the paper's cross-encoder scores 20 (context, candidate) pairs per example, so a batch of
8 examples is 160 sequences, and without truncation their activations, not the weights,
decide whether a run fits a 16 GB T4. The estimate counts, in bytes:

- weights, gradients and AdamW's two moments of every trained parameter (16 per parameter),
  plus the adapters and per-task heads the method adds, and fp16 copies under autocast;
- activations per encoder layer after Korthikanti et al. (2022, "Reducing activation
  recomputation in large transformer models"): ``s b h (34 + 5 a s / h)`` bytes at 16 bits
  (twice that in fp32); with gradient checkpointing, each layer's input plus one layer's
  full activations;
- a fixed CUDA context.

It is an estimate for planning (within tens of percent for BERT-like encoders), not a
measurement; ``tasks.max_length = none`` is estimated at :data:`UNTRUNCATED_TOKENS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 1024**3
T4_GIB = 15.0  # a T4's 16 GB as torch sees it (about 15.1 GiB usable)
CUDA_CONTEXT_GIB = 0.5
# the longest Persona-Chat pair is about this long: every earlier utterance of a dialogue
# (up to ~25 of ~12 tokens) then the candidate; a batch is padded to its own longest pair
UNTRUNCATED_TOKENS = 320


@dataclass(frozen=True)
class Encoder:
    """What the estimate needs to know of an encoder architecture."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    parameters: int


ENCODERS: dict[str, Encoder] = {
    "roberta-base": Encoder(12, 768, 12, 3072, 124_647_170),
    "minilm-offline": Encoder(6, 384, 12, 1536, 22_713_216),
    "tiny-roberta": Encoder(2, 64, 4, 128, 100_000),
}


def estimate_memory(config: Any) -> dict[str, Any]:
    """The estimate for ``config`` (an :class:`~metanb.experiments.config.ExperimentConfig`):
    GiB per part, the total, and whether it fits a T4; ``None`` parts for unknown models."""
    enc = ENCODERS.get(config.model.name)
    if enc is None:
        return {"model": config.model.name, "total_gib": None,
                "note": "no architecture on record for this model; known: "
                        + ", ".join(ENCODERS)}
    t, r = config.tasks, config.retrain
    tokens = t.max_length if t.max_length is not None else UNTRUNCATED_TOKENS
    k = min(t.retrain, r.tasks_per_step or 8)
    rows = r.batch_size * t.candidates * k  # sequences in one forward (both formats)
    half = r.mixed_precision in ("fp16", "bf16")
    act_bytes = 1 if half else 2  # Korthikanti's count is for 16-bit activations
    h, a, s = enc.hidden, enc.heads, tokens
    per_layer = s * rows * h * (34 + 5 * a * s / h) * act_bytes
    if config.model.gradient_checkpointing:
        activations = enc.layers * s * rows * h * 2 * act_bytes + per_layer
    else:
        activations = enc.layers * per_layer
    # adapters on q, k, v, o (h x h), intermediate (h x 4h) and output (4h x h) of each layer
    ranks = max(r.ranks) if r.ranks else 0
    adapter = enc.layers * ranks * (4 * 2 * h + 2 * (h + enc.intermediate)) * t.retrain
    heads = (h * h + h + 2 * h + 2) * t.retrain
    trained = enc.parameters + adapter + heads
    states = 16 * trained + (2 * enc.parameters if half else 0)
    parts = {"weights_grads_adamw_gib": states / GIB, "activations_gib": activations / GIB,
             "cuda_context_gib": CUDA_CONTEXT_GIB}
    total = sum(parts.values())
    return {
        "model": config.model.name,
        "sequences_per_step": rows,
        "tokens_per_sequence": tokens if t.max_length is not None else f"{tokens} (assumed)",
        "precision": r.mixed_precision,
        "gradient_checkpointing": config.model.gradient_checkpointing,
        **{key: round(value, 2) for key, value in parts.items()},
        "total_gib": round(total, 1),
        "fits_t4_16gb": total <= T4_GIB,
    }
