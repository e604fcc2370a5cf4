"""The recipe page's memory table: the numbers it prints are the package's adapter counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metanb.lora import MultiLoraConfig, add_multi_lora

transformers = pytest.importorskip("transformers")

RECIPE = Path(__file__).resolve().parents[1] / "book" / "recipe.md"
ALL_ENCODER_LINEARS = r"roberta\.encoder\..*\.(query|key|value|dense)$"


def lora_count(targets, tasks: int = 10, rank: int = 8) -> int:
    with torch.device("meta"):  # roberta-base's shapes, no weights, no memory
        model = transformers.RobertaForSequenceClassification(
            transformers.RobertaConfig(num_labels=2))
    add_multi_lora(model, MultiLoraConfig(num_tasks=tasks, rank=rank, alpha=2 * rank,
                                          target_modules=targets))
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


@pytest.mark.parametrize(
    ("targets", "per_rank_and_task"),
    [(("query", "value"), 24 * 1536), (ALL_ENCODER_LINEARS, 12 * (4 * 1536 + 2 * (768 + 3072)))],
)
def test_memory_table_matches_the_adapters_the_package_adds(targets, per_rank_and_task):
    count = lora_count(targets)
    assert count == 10 * 8 * per_rank_and_task  # T r (d_in + d_out), summed over layers
    assert f"{count:,}" in RECIPE.read_text(encoding="utf-8")
