"""finetune.schedule_stretch: the official fine-tuning scripts' --sm 4.0 (convai/lora.py and
last-layer.py stretch the linear decay to sm x the new task's batches x epochs, so the lr never
reaches 0). The default, 1.0, keeps the decay to 0 at the last step."""

from __future__ import annotations

import math

import pytest

import metanb.finetune as finetune
from metanb import MetanbError
from metanb.experiments.grid import FinetuneSpec
from metanb.experiments.pipeline import HeldoutTask, adapt_and_score
from metanb.experiments.profiles import load_profile
from metanb.models import random_multiple_choice_batches, tiny_roberta

VOCAB = 40


def official_factor(step: int, steps: int, warmup: float, stretch: float) -> float:
    """The lr factor of the last step, written out: linear decay from the end of warmup
    towards 0 at stretch x steps."""
    warm = math.ceil(warmup * steps)
    end = stretch * steps
    return (end - step) / (end - warm)


@pytest.fixture
def histories(monkeypatch):
    """The retraining loop's record of every fine-tuning run."""
    seen = []
    real = finetune.run_retraining

    def recording(*args, **kwargs):
        result = real(*args, **kwargs)
        seen.append(result.history)
        return result

    monkeypatch.setattr(finetune, "run_retraining", recording)
    return seen


def tiny():
    return tiny_roberta(VOCAB, seed=0, hidden_size=32, num_hidden_layers=1,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.mark.parametrize("stretch", [1.0, 4.0])
def test_the_last_fine_tuning_lr_is_the_stretched_formula(histories, stretch):
    batches = random_multiple_choice_batches(VOCAB, 2, 4, 2, 6, seed=0)
    steps, lr = 10, 1e-2
    finetune.finetune_head(tiny(), batches, steps=steps, lr=lr, seed=0, device="cpu",
                           schedule_stretch=stretch)
    last = histories[-1][-1]["lr"]
    assert last == pytest.approx(lr * official_factor(steps - 1, steps, 0.1, stretch))
    assert last > 0
    if stretch == 1.0:  # the default: one step short of 0 (1 / (steps - warm) of the peak)
        assert last == pytest.approx(lr / (steps - 1))
    else:  # --sm 4.0: (40 - 9) / (40 - 1) of the peak
        assert last == pytest.approx(lr * 31 / 39)


def test_the_pipeline_passes_the_profile_setting_on(histories):
    config = load_profile("quick").override({"finetune.steps": 10,
                                             "finetune.schedule_stretch": 4.0}).validate()
    support = random_multiple_choice_batches(VOCAB, 2, 4, 2, 6, seed=0)
    query = random_multiple_choice_batches(VOCAB, 1, 4, 2, 6, seed=1)
    task = HeldoutTask("t", support, query, n_support=4, n_query=2)
    adapt_and_score(tiny(), FinetuneSpec("head"), task, config.override({"device": "cpu"}), 0)
    assert histories[-1][-1]["lr"] == pytest.approx(
        config.finetune.lr * official_factor(9, 10, 0.1, 4.0))


def test_profiles_and_bad_values():
    assert load_profile("quick").validate().finetune.schedule_stretch == 1.0
    assert load_profile("paper").validate().finetune.schedule_stretch == 4.0
    assert load_profile("colab").validate().finetune.schedule_stretch == 4.0
    for bad in (0.5, float("nan")):
        with pytest.raises(MetanbError, match="^finetune.schedule_stretch must be >= 1, got"):
            load_profile("quick").override({"finetune.schedule_stretch": bad}).validate()
