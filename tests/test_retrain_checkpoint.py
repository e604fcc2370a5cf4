"""metanb.retrain checkpoints: a killed run resumes exactly where it stopped."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from metanb import MetanbError
from metanb.models import random_multiple_choice_batches, tiny_roberta
from metanb.retrain import retrain

VOCAB = 40


class Crashing(Sequence):
    """A task's batches that raise once all tasks together had ``limit`` reads: a kill."""

    def __init__(self, batches: list, reads: list[int], limit: int) -> None:
        self.batches, self.reads, self.limit = batches, reads, limit

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i):
        self.reads[0] += 1
        if self.reads[0] > self.limit:
            raise KeyboardInterrupt("killed")
        return self.batches[i]


@pytest.fixture
def model():
    # dropout stays on (RoBERTa's 0.1 and the adapters' 0.1): resuming must restore the RNG
    return tiny_roberta(VOCAB, seed=0, hidden_size=32, num_hidden_layers=1)


@pytest.fixture
def tasks():
    return [random_multiple_choice_batches(VOCAB, 3, 4, 2, 6, seed=t) for t in range(3)]


RUN = dict(rank=2, steps=6, lr=1e-2, dropout=0.1, tasks_per_step=2, progress=False,
           device="cpu", seed=3)


@pytest.mark.parametrize("method", ["lora-ml", "reptile"])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(model, tasks, tmp_path, method):
    kw = dict(RUN, method=method, inner_steps=2)
    straight = retrain(model, tasks, **kw)
    path = tmp_path / "run.pt"
    reads_per_step = 2 if method == "lora-ml" else 2 * 2  # 2 tasks, 1 or inner_steps batches
    reads = [0]
    crashing = [Crashing(batches, reads, limit=4 * reads_per_step + 1) for batches in tasks]
    with pytest.raises(KeyboardInterrupt):  # killed during step 5
        retrain(model, crashing, checkpoint=path, checkpoint_every=2, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # no temporary left
    assert torch.load(path, weights_only=True)["step"] == 4
    resumed = retrain(model, tasks, checkpoint=path, checkpoint_every=2, **kw)
    assert resumed.resumed_from == 4
    losses = [h["loss"] for h in straight.history]
    assert [h["loss"] for h in resumed.history] == losses  # the next step included
    assert [h["tasks"] for h in resumed.history] == [h["tasks"] for h in straight.history]
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    for name, value in straight.adapter_state.items() if straight.adapter_state else ():
        assert torch.equal(value, resumed.adapter_state[name])


def test_a_finished_checkpoint_returns_the_same_model_without_training(model, tasks, tmp_path):
    path = tmp_path / "run.pt"
    first = retrain(model, tasks, method="lora-ml", checkpoint=path, checkpoint_every=4, **RUN)
    again = retrain(model, tasks, method="lora-ml", checkpoint=path, **RUN)
    assert again.resumed_from == RUN["steps"] and len(again.history) == RUN["steps"]
    for a, b in zip(first.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_checkpoint_of_another_run_is_refused(model, tasks, tmp_path):
    path = tmp_path / "run.pt"
    retrain(model, tasks, method="lora-ml", checkpoint=path, **RUN)
    with pytest.raises(MetanbError, match="another run.*lr: 0.01 there vs 0.02 here"):
        retrain(model, tasks, method="lora-ml", checkpoint=path, **{**RUN, "lr": 2e-2})
    with pytest.raises(MetanbError, match="another run"):
        retrain(model, tasks[:2], method="lora-ml", checkpoint=path, **RUN)
