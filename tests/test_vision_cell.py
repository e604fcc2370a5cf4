"""One vision cell end to end on the real digits (tiny model, one epoch): every method runs
through the loop and fine-tunes; the method table maps to the loop's options."""

from __future__ import annotations

import pytest

from metanb.errors import MetanbError
from metanb.vision.cell import VisionSettings, retrain_options, run_vision_cell
from metanb.vision.mixer import ALL_LINEAR

TINY = VisionSettings(dataset="digits", batch_size=128, retrain_epochs=1, finetune_epochs=1,
                      retrain_lr=1e-3, finetune_lr=5e-3, dim=16, inner_steps=2)


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    from metanb.data.images import load_digits

    return load_digits()


@pytest.mark.parametrize(("method", "finetune"), [("lora-ml", "lora"), ("reptile", "head")])
def test_a_cell_retrains_and_fine_tunes(digits, method, finetune):
    res = run_vision_cell(method, 1, TINY, digits, finetune=finetune)
    assert res["method"] == method and res["finetune"] == finetune
    assert 0.0 <= res["accuracy"] <= 1.0 and 0.0 <= res["pretrained_accuracy"] <= 1.0
    # 1 epoch of the largest retraining pair (about 270 train images) in batches of 128
    assert res["retrain_steps"] == (3 if method != "reptile" else 1)
    assert res["finetune_steps"] == 3  # 8s and 9s: 267 train images


def test_method_options_follow_the_paper():
    opts = retrain_options("lora-ml", VisionSettings())
    assert (opts["rank"], opts["lora_alpha"], opts["target_modules"]) == (1, 1.0, ALL_LINEAR)
    assert retrain_options("last-layer-ml", VisionSettings())["task_heads"] == "head"
    assert retrain_options("reptile", VisionSettings())["inner_steps"] == 20
    with pytest.raises(MetanbError, match="unknown vision method 'maml'"):
        retrain_options("maml", VisionSettings())
    with pytest.raises(MetanbError, match="unknown fine-tuning 'full'"):
        run_vision_cell("standard", 0, TINY, (None, None), finetune="full")  # type: ignore[arg-type]
