"""The paper's language experiment (profile ``paper``) end to end on a tiny model, offline.

The data folder is written here in the download's layout and formats: ParlAI fbdialog text
(``*_self_original.txt``, 20 candidates, ids reset per episode) and PAML's persona maps as
*pickles* of {numpy.int32 cluster id: [sorted persona sentences]}, read by the allow-list
unpickler. The tiny run exercises every stage of the paper's code path: clusters as tasks,
the cross-encoder, per-task heads, the four methods, epoch schedules, the checkpoint chosen
on retraining validation, fresh heads for fine-tuning and the coupled rank sweep.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metanb.data import write_offline_persona_chat
from metanb.errors import MetanbError
from metanb.experiments.grid import Cell, finetune_specs, grid_cells
from metanb.experiments.memory import estimate_memory
from metanb.experiments.profiles import load_profile
from metanb.finetune import EpochMonitor, evaluate_hits_at_1, reinit_modules
from metanb.models import load_model

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1", "PYTHONHASHSEED": "0", "TOKENIZERS_PARALLELISM": "false",
       "OMP_NUM_THREADS": "1"}
# the overrides the issue names: the paper's code path on a tiny model and a tiny folder
TINY = ["--set", "model.name=tiny-roberta", "--set", "tasks.retrain=3",
        "--set", "tasks.heldout=2", "--set", "retrain.ranks=[2]", "--set", "retrain.epochs=1",
        "--set", "finetune.epochs=1", "--seeds", "0", "--device", "cpu"]


def persona_chat_folder(folder: Path) -> Path:
    """3 train clusters, 2 valid clusters, 4 dialogues each; maps pickled as PAML's are."""
    write_offline_persona_chat(folder, train_clusters=3, valid_clusters=2,
                               personas_per_cluster=1, dialogues_per_persona=4, turns=2,
                               candidates=20)
    for split in ("train", "valid"):
        raw = json.loads((folder / f"{split}_persona_map.json").read_text(encoding="utf-8"))
        with open(folder / f"{split}_persona_map", "wb") as handle:
            pickle.dump({np.int32(int(k)): v for k, v in raw.items()}, handle)
        (folder / f"{split}_persona_map.json").unlink()
    return folder


def metanb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metanb", *args], capture_output=True,
                          text=True, env=ENV, timeout=300)


def paper(*more: str):
    return load_profile("paper").override(list(more)).validate()


# ---- the command -------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["paper", "colab"])
def test_dry_run_json_needs_no_out_and_shows_the_design(profile: str) -> None:
    proc = metanb("run", "convai2", "--profile", profile, "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    config = shown["config"]
    assert config["model"]["name"] == "roberta-base"
    assert config["model"]["target_modules"] == [
        "query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
    assert config["tasks"]["format"] == "cross-encoder" and config["tasks"]["candidates"] == 20
    assert config["tasks"]["retrain"] == 10
    assert config["retrain"]["methods"] == ["standard", "lora-ml", "last-layer-ml", "reptile"]
    assert config["retrain"]["task_heads"] == "classifier"
    assert config["finetune"]["fresh_head"] and config["finetune"]["match_retrain_rank"]
    memory = shown["t4_memory_estimate"]
    if profile == "paper":
        assert config["seeds"] == [0, 1, 2, 3, 4]
        assert config["retrain"]["ranks"] == [1, 4, 8, 12, 16]
        assert config["tasks"]["split"] == "clusters" and config["tasks"]["max_length"] is None
        assert config["retrain"]["select"] == "validation"
        assert not memory["fits_t4_16gb"]  # untruncated fp32 pairs: a bigger GPU
    else:
        assert config["data"]["hf_name"] == "AlekseyKorshuk/persona-chat"
        assert memory["fits_t4_16gb"] and memory["gradient_checkpointing"]
    # the text form prints the estimate too
    text = metanb("run", "convai2", "--profile", profile, "--dry-run")
    assert "# T4 memory estimate" in text.stdout


def test_a_run_without_out_is_one_line() -> None:
    proc = metanb("run", "convai2", "--profile", "quick")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("metanb run: error: --out is required (a run folder); only "
                                   "--dry-run runs without it")


@pytest.mark.parametrize("what", ["clusters", "parlai-file"])
def test_missing_data_is_one_line_and_writes_no_run_folder(tmp_path: Path, what: str) -> None:
    data = tmp_path / "persona_chat"
    data.mkdir()
    (data / "train_self_original.txt").write_text("1 your persona: i like tea.\n")
    out = tmp_path / "run"
    if what == "clusters":
        args = ["--profile", "paper", "--set", f"data.path={data}", *TINY]
        expected = (f"{data} lacks valid_self_original.txt, train_persona_map, "
                    "valid_persona_map; a Persona-Chat folder holds")
    else:
        args = ["--profile", "quick", "--set", "data.source=parlai",
                "--set", f"data.path={data / 'nope.txt'}"]
        expected = f"data.path {data / 'nope.txt'} does not exist; give a ParlAI text file"
    proc = metanb("run", "convai2", *args, "--out", str(out), "--no-progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr
    assert not out.exists()  # nothing written: fixing the path then runs in the same folder


def test_tiny_paper_run_writes_every_method_with_last_below_best(tmp_path: Path) -> None:
    data = persona_chat_folder(tmp_path / "persona_chat")
    out = tmp_path / "run"
    proc = metanb("run", "convai2", "--profile", "paper", "--set", f"data.path={data}", *TINY,
                  "--out", str(out), "--no-progress", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    got = {(r["method"], r["retrain_rank"], r["finetune"]) for r in records}
    assert got == {(m, r, f) for m, r in [("standard", None), ("lora-ml", 2),
                                          ("last-layer-ml", None), ("reptile", None)]
                   for f in ("0", "2", "head")}
    for r in records:
        assert 0.0 <= r["accuracy"] <= r["accuracy_best"] <= 1.0
        assert set(r["accuracy_per_persona"]) == set(r["accuracy_best_per_task"])
        assert len(r["accuracy_per_persona"]) == 2  # the 2 largest valid clusters
        for task, last in r["accuracy_per_persona"].items():
            assert last <= r["accuracy_best_per_task"][task]
        assert r["retrain_best_epoch"] == 1 and len(r["retrain_validation"]) == 1
        assert r["query_examples"] == 2 * 2 * 2  # 2 clusters x last 2 dialogues x 2 turns
    steps = {r["method"]: r["retrain_steps"] for r in records}
    # one step per task batch (3 tasks, 1 batch each), Reptile one step per task
    assert steps == {"standard": 3, "lora-ml": 3, "last-layer-ml": 3, "reptile": 3}
    # compute beside accuracy: every method sees each retraining example once an epoch,
    # Reptile 20 times (inner_steps: 20 updates on each task batch)
    seen = {r["method"]: r["retrain_examples"] for r in records}
    assert seen["standard"] > 0 and seen["reptile"] == 20 * seen["standard"]
    assert seen["lora-ml"] == seen["last-layer-ml"] == seen["standard"]


# ---- the design's pieces -------------------------------------------------------------------

def test_the_paper_profile_validates_its_own_requirements() -> None:
    with pytest.raises(MetanbError, match="tasks.split=clusters needs data.source=parlai"):
        paper("data.source=generator")
    with pytest.raises(MetanbError, match="retrain.select=validation needs"):
        paper("retrain.epochs=none")
    with pytest.raises(MetanbError, match="max_length=none .* needs tasks.format=cross-encoder"):
        paper("tasks.format=multiple-choice")
    with pytest.raises(MetanbError, match="unknown tasks.format 'bi-encoder'"):
        paper("tasks.format=bi-encoder")
    with pytest.raises(MetanbError, match="needs retrain.task_heads"):
        paper("retrain.task_heads=none")
    with pytest.raises(MetanbError, match="tasks.nested=true needs tasks.split=personas"):
        paper("tasks.nested=true")


def test_coupled_ranks_fine_tune_each_base_at_its_own_rank() -> None:
    config = paper("retrain.ranks=[1,4]", "seeds=[0]")
    specs = {cell.name: [s.label for s in finetune_specs(config, cell)]
             for cell in grid_cells(config)}
    assert specs["lora-ml-r1-seed0"] == ["0", "1", "head"]
    assert specs["lora-ml-r4-seed0"] == ["0", "4", "head"]
    assert specs["standard-seed0"] == ["0", "1", "4", "head"]
    decoupled = config.override(["finetune.match_retrain_rank=false", "finetune.ranks=[2,3]"])
    assert [s.label for s in finetune_specs(decoupled, Cell(0, "lora-ml", 1))] == [
        "0", "2", "3", "head"]


def test_epochs_become_steps_per_method() -> None:
    from metanb.experiments.pipeline import retrain_steps_per_epoch

    tasks = [[0] * 5, [0] * 3, [0] * 1]  # batches per task
    config = paper("tasks.retrain=3")
    assert retrain_steps_per_epoch(config, "lora-ml", tasks) == 9  # one per task batch
    assert retrain_steps_per_epoch(config, "reptile", tasks) == 3  # one per task
    mixed = config.override(["retrain.tasks_per_step=3"])
    assert retrain_steps_per_epoch(mixed, "standard", tasks) == 3  # ceil(9 / 3)
    assert retrain_steps_per_epoch(mixed, "reptile", tasks) == 1


def test_memory_estimate_counts_checkpointing_and_precision() -> None:
    colab = load_profile("colab")
    full = estimate_memory(colab.override(["model.gradient_checkpointing=false"]))
    saved = estimate_memory(colab)
    assert saved["activations_gib"] < full["activations_gib"] / 5
    fp32 = estimate_memory(colab.override(["retrain.mixed_precision=no"]))
    assert fp32["activations_gib"] == pytest.approx(2 * saved["activations_gib"], rel=0.01)
    assert estimate_memory(colab.override(["model.name=gpt2"]))["total_gib"] is None


def test_tiny_roberta_is_a_two_label_sequence_classifier_offline() -> None:
    model, tok = load_model("tiny-roberta", texts=["hello there", "i like cats"], seed=0,
                            head="sequence-classification")
    assert type(model).__name__ == "RobertaForSequenceClassification"
    assert model.config.num_labels == 2
    batch = tok(["hello there", "i like cats"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 2)
    with pytest.raises(MetanbError, match="unknown model head"):
        load_model("tiny-roberta", texts=["a"], head="token-classification")


def test_a_fresh_head_is_reinitialised_seeded_and_leaves_the_base() -> None:
    model, _ = load_model("tiny-roberta", texts=["a b c"], seed=0, head="sequence-classification")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one = reinit_modules(model, ["classifier"], seed=3)
    changed = {k for k, v in one.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("classifier.") and "weight" in k for k in changed)
    again = {k: v.clone() for k, v in one.state_dict().items()}
    reinit_modules(one, ["classifier"], seed=3)
    assert all(torch.equal(v, again[k]) for k, v in one.state_dict().items())


def test_hits_at_1_of_a_cross_encoder_batch() -> None:
    class Fixed(torch.nn.Module):  # scores: the positive logit is the input id itself
        def forward(self, input_ids, attention_mask=None, labels=None):
            logits = torch.stack([torch.zeros(len(input_ids)), input_ids[:, 0].float()], 1)
            return type("Out", (), {"logits": logits, "loss": None})()

    # 2 examples x 3 candidates: example 0's true reply (row 1) scores highest, example 1's not
    batch = {"input_ids": torch.tensor([[1], [5], [2], [9], [3], [4]]),
             "attention_mask": torch.ones(6, 1, dtype=torch.long),
             "labels": torch.tensor([0, 1, 0, 0, 0, 1])}
    model = Fixed()
    model.weight = torch.nn.Parameter(torch.zeros(1))  # a device for the evaluator
    assert evaluate_hits_at_1(model, [batch], group_size=3) == 0.5


def test_epoch_monitor_keeps_the_best_and_every_score() -> None:
    values = iter([0.2, 0.5, 0.4])
    monitor = EpochMonitor(lambda m: next(values), every=2, keep_best=True)
    monitor.model = torch.nn.Linear(1, 1)
    assert [monitor.due(d, 6) for d in range(1, 7)] == [False, True, False, True, False, True]
    for _ in range(3):
        monitor.save({})
    assert monitor.scores == [0.2, 0.5, 0.4] and monitor.best_index == 1
    assert monitor.best is not None and monitor.best is not monitor.model
    assert monitor.load(None, 1) is None  # never resumes


def test_fine_tuning_epochs_give_last_and_best(tmp_path: Path) -> None:
    """More fine-tuning epochs: the query is scored after each, best >= last."""
    from metanb.experiments.grid import FinetuneSpec
    from metanb.experiments.pipeline import adapt_and_score, prepare

    data = persona_chat_folder(tmp_path / "pc")
    config = paper(f"data.path={data}", "model.name=tiny-roberta", "tasks.retrain=3",
                   "tasks.heldout=2", "finetune.epochs=3", "finetune.lr=1e-2", "device=cpu")
    prep = prepare(config, 0)
    for spec in (FinetuneSpec("lora", 2), FinetuneSpec("head")):
        last, best = adapt_and_score(prep.model, spec, prep.heldout[0], config, seed=0)
        assert 0.0 <= last <= best <= 1.0
