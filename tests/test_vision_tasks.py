"""Class-pair tasks and their batches, on a small labelled image set built here."""

from __future__ import annotations

import pytest
import torch

from metanb.data.images import ImageSet
from metanb.errors import MetanbError
from metanb.vision.tasks import (
    RETRAIN_PAIRS,
    UNSEEN_PAIR,
    Augment,
    TaskBatches,
    check_pairs,
    eval_batches,
    make_tasks,
    pair_task,
)


def tagged_images(per_class: int = 7) -> ImageSet:
    """Images whose every pixel is 10 * class + the example's index in its class (0..9): a
    batch tells exactly which class and image each row came from."""
    labels = torch.arange(10).repeat_interleave(per_class)
    index = torch.arange(per_class).repeat(10)
    values = (10 * labels + index).to(torch.uint8)
    images = values.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    return ImageSet(images, labels, 1.0, (0.0,), (1.0,))


def classes_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return (batch["pixel_values"][:, 0, 0, 0] // 10).long()


def test_pairs_relabel_to_class_mod_2():
    task = pair_task(tagged_images(), (4, 5))
    assert len(task) == 14
    assert torch.equal(task.labels, (task.images[:, 0, 0, 0] // 10).long() % 2)
    assert set(task.labels.tolist()) == {0, 1}


def test_retraining_batches_never_hold_the_unseen_pair():
    train = test = tagged_images()
    tasks = make_tasks(train, test, batch_size=4, retrain_epochs=3, finetune_epochs=2, seed=1,
                       augment=None)
    assert len(tasks.retrain) == 4
    for pair, batches in zip(RETRAIN_PAIRS, tasks.retrain, strict=True):
        seen = torch.cat([classes_of(b) for b in batches])
        assert len(seen) == 3 * 14  # 3 epochs of the pair's 14 images
        assert set(seen.tolist()) == set(pair)
        for b in batches:
            assert torch.equal(b["labels"], classes_of(b) % 2)
            assert b["pixel_values"].dtype == torch.float32 and b["labels"].dtype == torch.long
    assert set(torch.cat([classes_of(b) for b in tasks.finetune]).tolist()) == set(UNSEEN_PAIR)
    assert set(torch.cat([classes_of(b) for b in tasks.test]).tolist()) == set(UNSEEN_PAIR)


def test_batches_shapes_epochs_and_seeding():
    data = pair_task(tagged_images(), (0, 1))
    batches = TaskBatches(data, 4, epochs=2, seed=3, key="t")
    assert len(batches) == 8  # ceil(14 / 4) = 4 per epoch
    assert [b["labels"].shape[0] for b in batches] == [4, 4, 4, 2] * 2
    assert batches[0]["pixel_values"].shape == (4, 1, 4, 4)
    epoch = torch.cat([b["pixel_values"][:, 0, 0, 0] for b in list(batches)[:4]])
    assert sorted(epoch.tolist()) == sorted(data.images[:, 0, 0, 0].float().tolist())  # a pass
    again = TaskBatches(data, 4, epochs=2, seed=3, key="t")
    assert all(torch.equal(again[i]["pixel_values"], batches[i]["pixel_values"])
               for i in range(8))
    other = TaskBatches(data, 4, epochs=2, seed=4, key="t")
    assert not all(torch.equal(other[i]["labels"], batches[i]["labels"]) for i in range(8))
    with pytest.raises(IndexError):
        batches[8]


def test_augmentation_differs_per_batch_and_keeps_shapes():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 255, (6, 3, 8, 8), generator=g, dtype=torch.uint8)
    data = ImageSet(images, torch.tensor([0, 1] * 3), 255.0, (0.5,) * 3, (0.25,) * 3)
    batches = TaskBatches(data, 6, epochs=2, seed=0, key="a", augment=Augment(2, True))
    first, second = batches[0], batches[1]
    assert first["pixel_values"].shape == (6, 3, 8, 8)
    assert not torch.equal(first["pixel_values"].sort(0).values,
                           second["pixel_values"].sort(0).values)


def test_eval_batches_cover_every_image_once_in_order():
    data = tagged_images(3)
    batches = eval_batches(data, batch_size=7)
    values = torch.cat([b["pixel_values"][:, 0, 0, 0] for b in batches])
    assert torch.equal(values, data.images[:, 0, 0, 0].float())


@pytest.mark.parametrize(("pairs", "unseen", "message"), [
    (((0, 2),), (8, 9), r"class pair \(0, 2\) needs one even and one odd class"),
    (((0, 1), (1, 2)), (8, 9), r"class pair \(1, 2\) shares a class"),
    (((0, 1), (8, 9)), (8, 9), r"class pair \(8, 9\) shares a class"),
])
def test_bad_pairs_are_refused(pairs, unseen, message):
    with pytest.raises(MetanbError, match=message):
        check_pairs(pairs, unseen)
