"""A synthetic multiple-choice task family where the loss means something (unlike random labels).

Task t owns one key token. In every example the correct choice carries task t's key at a
random position; each wrong choice carries, with probability 1/2, the key of another task
(else no key at all). So part of the problem is shared (prefer a choice that has a key at all:
the loss falls below ln(choices) without knowing the task) and part is task-specific (which
key is *this* task's), the structure LoRA-ML's base plus per-task adapters is built for.
Held-out batches come from the same generator with another seed, so the loss measures
learning, not memorisation.
"""

from __future__ import annotations

import torch

KEY0 = 10  # first key token (ids below are special tokens or unused)
FILLER0 = 200  # filler tokens are drawn from [FILLER0, vocab)


def keyed_batches(task: int, num_tasks: int, vocab: int, batches: int, batch_size: int,
                  choices: int, length: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``batches`` multiple-choice batches of task ``task`` of ``num_tasks``, seeded."""
    if KEY0 + num_tasks > FILLER0 or vocab <= FILLER0:
        raise ValueError(f"need {num_tasks} keys below {FILLER0} and vocab > {FILLER0}")
    g = torch.Generator().manual_seed(seed * 100_003 + task)
    out = []
    for _ in range(batches):
        ids = torch.randint(FILLER0, vocab, (batch_size, choices, length), generator=g)
        labels = torch.randint(0, choices, (batch_size,), generator=g)
        # another task's key for each wrong choice (uniform over the other tasks), kept w.p. 1/2
        others = (task + 1 + torch.randint(0, max(num_tasks - 1, 1), (batch_size, choices),
                                           generator=g)) % num_tasks
        keys = torch.where(torch.rand(batch_size, choices, generator=g) < 0.5, KEY0 + others, -1)
        keys[torch.arange(batch_size), labels] = KEY0 + task
        where = torch.randint(0, length, (batch_size, choices), generator=g)
        rows, cols = torch.nonzero(keys >= 0, as_tuple=True)
        ids[rows, cols, where[rows, cols]] = keys[rows, cols]
        out.append({"input_ids": ids,
                    "attention_mask": torch.ones(batch_size, choices, length, dtype=torch.long),
                    "labels": labels})
    return out


def keyed_task_set(num_tasks: int, vocab: int, batches: int, batch_size: int, choices: int,
                   length: int, seed: int) -> list[list[dict[str, torch.Tensor]]]:
    """One list of batches per task (the ``tasks`` argument of ``retrain``)."""
    return [keyed_batches(t, num_tasks, vocab, batches, batch_size, choices, length, seed)
            for t in range(num_tasks)]
