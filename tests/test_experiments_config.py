"""The experiment config: YAML/JSON round trips, typed overrides, one-line validation errors."""

from __future__ import annotations

import pytest

from metanb.errors import MetanbError
from metanb.experiments.config import (
    ExperimentConfig,
    config_keys,
    diff,
    flatten,
    read_settings,
)
from metanb.experiments.profiles import load_profile, profile_names


def test_profiles_ship_and_validate() -> None:
    assert profile_names() == ["colab", "minilm", "paper", "quick"]
    quick = load_profile("quick")
    assert quick.profile == "quick"
    assert quick.data.source == "generator"  # quick never touches the Hub
    assert quick.model.name in ("tiny-roberta", "minilm-offline")
    assert len(quick.seeds) >= 3
    for name in ("colab", "paper"):
        cfg = load_profile(name)
        assert cfg.model.name == "roberta-base" and cfg.tasks.format == "cross-encoder"
    # the paper's clusters from a Persona-Chat folder; colab's personas from the Hub's parquet
    assert load_profile("paper").data.source == "parlai"
    assert load_profile("paper").tasks.split == "clusters"
    assert load_profile("colab").data.hf_name == "AlekseyKorshuk/persona-chat"
    minilm = load_profile("minilm")  # offline too: a pretrained encoder from PyPI
    assert (minilm.model.name, minilm.data.source) == ("minilm-offline", "generator")
    assert minilm.tasks == quick.tasks and minilm.data == quick.data  # same personas as quick


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, suffix: str) -> None:
    cfg = load_profile("quick").override(["retrain.lr=3e-4", "finetune.ranks=[2,5]",
                                          "retrain.tasks_per_step=3", "data.path=x.txt"])
    back = ExperimentConfig.load(cfg.save(tmp_path / f"c{suffix}"))
    assert back == cfg
    assert back.retrain.lr == pytest.approx(3e-4) and isinstance(back.retrain.lr, float)


def test_overrides_are_typed() -> None:
    cfg = ExperimentConfig().override([
        "retrain.lr=1e-4",            # YAML 1.1 would read this as a string
        "seeds=0,1,2",                # comma list
        "finetune.ranks=[1, 4]",      # YAML list
        "retrain.tasks_per_step=none",
        "finetune.head=false",
        "model.target_modules=query,key,value",
    ])
    assert cfg.retrain.lr == 1e-4
    assert cfg.seeds == [0, 1, 2]
    assert cfg.finetune.ranks == [1, 4]
    assert cfg.retrain.tasks_per_step is None
    assert cfg.finetune.head is False
    assert cfg.model.target_modules == ["query", "key", "value"]
    # the original is untouched (override returns a copy)
    assert ExperimentConfig().retrain.lr == 1e-4 and ExperimentConfig().seeds == [0]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["retrain.methods=[standard, maml]"], "unknown method 'maml'"),
        (["retrain.methods=[last-layer-ml]"], "method 'last-layer-ml' needs retrain.task_heads"),
        (["retrain.methods=[]"], "retrain.methods is empty"),
        (["retrain.ranks=[]"], "retrain.ranks is empty"),
        (["finetune.ranks=[]", "finetune.head=false"], "nothing to fine-tune"),
        (["finetune.ranks=[0, 4]"], "LoRA ranks are >= 1"),
        (["tasks.retrain=50"], "has only 40"),
        (["tasks.support=0"], "tasks.support must be >= 1"),
        (["data.source=parlai"], "needs data.path"),
        (["data.source=web"], "unknown data.source 'web'"),
        (["seeds=[1, 1]"], "lists 1 twice"),
        (["retrain.tasks_per_step=0"], "retrain.tasks_per_step must be >= 1"),
        (["retrain.lr=0"], "retrain.lr must be > 0"),
    ],
)
def test_validation_errors_are_one_line(overrides: list[str], fragment: str) -> None:
    with pytest.raises(MetanbError) as info:
        ExperimentConfig().override(overrides).validate()
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("steps=3", "did you mean pretrain.steps, retrain.steps, finetune.steps"),
        ("retrain.lr=fast", "retrain.lr='fast' is not a valid float"),
        ("tasks.support=2.5", "not a valid int"),
        ("finetune.ranks=[a]", "not a valid list of int"),
        ("nonsense", "is not key=value"),
        ("seeds=none", "seeds cannot be none"),
    ],
)
def test_bad_overrides(override: str, fragment: str) -> None:
    with pytest.raises(MetanbError, match=fragment.replace("[", r"\[")):
        ExperimentConfig().override([override])


def test_file_errors(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("retrain: {steps: [1\n")
    with pytest.raises(MetanbError, match="not valid YAML/JSON"):
        ExperimentConfig.load(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("retrain:\n  stepz: 3\n")
    with pytest.raises(MetanbError, match="unknown config key 'retrain.stepz'"):
        ExperimentConfig.load(unknown)
    with pytest.raises(MetanbError, match="does not exist"):
        ExperimentConfig.load(tmp_path / "missing.yaml")


def test_partial_file_overrides_only_its_keys(tmp_path) -> None:
    path = tmp_path / "partial.yaml"
    path.write_text("retrain:\n  steps: 7\nseeds: [4]\n")
    cfg = load_profile("quick").override(flatten(read_settings(path)))
    assert cfg.retrain.steps == 7 and cfg.seeds == [4]
    assert cfg.retrain.lr == load_profile("quick").retrain.lr


def test_fingerprint_ignores_grid_axes_only() -> None:
    a = load_profile("quick")
    grid = a.override(["seeds=[5]", "retrain.methods=[reptile]", "finetune.ranks=[2]",
                       "device=cuda"])
    assert diff(a.fingerprint(), grid.fingerprint()) == []
    other = a.override(["retrain.steps=1"])
    assert diff(a.fingerprint(), other.fingerprint()) == [
        f"retrain.steps: {a.retrain.steps!r} != 1"]


def test_every_key_has_help() -> None:
    keys = config_keys()
    assert "retrain.steps" in keys and "tasks.retrain" in keys
    assert all(keys.values())


def test_offline_environment_picks_quick(monkeypatch) -> None:
    from metanb.experiments.profiles import choose_profile, hub_reachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False
    assert choose_profile() == "quick"


def test_nested_setting_fixes_the_new_personas_of_a_T_sweep():
    from metanb.experiments.pipeline import load_dialogues, persona_split

    def split(T: int, nested: bool):
        config = load_profile("quick").override(
            [f"tasks.retrain={T}", f"tasks.nested={str(nested).lower()}"]).validate()
        retrain, heldout = persona_split(config, load_dialogues(config), seed=1)
        return [t.key for t in retrain], [t.key for t in heldout]

    (r4, h4), (r16, h16) = split(4, True), split(16, True)
    assert h4 == h16 and len(h4) == 8 and r16[:4] == r4
    assert split(4, False)[1] != split(16, False)[1]  # the committed runs' split moves them
