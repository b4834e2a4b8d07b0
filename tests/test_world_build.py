"""World config validation, Bradley-Terry labels, and a tiny build: deterministic, cached, complete."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from sepo.errors import ConfigError
from sepo.world import text
from sepo.world.build import (
    SPLITS,
    WorldConfig,
    bradley_terry_choice,
    build_world,
    smoke_world_config,
    split_sizes,
    world_dir,
)
from sepo.world.judge import credit_to_tokens


def tiny_config(**overrides):
    """Smaller than the smoke world: one size per tokenizer, a few steps (tests the plumbing, not quality)."""
    values = dict(id_pairs=12, ood_pairs=10, id_eval_prompts=4, ood_eval_prompts=3, sft_examples=64, sizes=("small",),
                  policy_size="small", sft_steps=4, sft_batch_size=8, max_new_tokens=12, max_length=48)
    values.update(overrides)
    return smoke_world_config(**values)


@pytest.mark.parametrize("overrides, field", [
    ({"id_pairs": text.prompt_capacity("id")}, "id_pairs"),  # pairs + held-out prompts exceed the distinct prompts
    ({"ood_pairs": 2}, "ood_pairs"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"min_sentences": 0}, "min_sentences"),
    ({"split_fractions": (0.5, 0.5)}, "split_fractions"),
    ({"split_fractions": (0.7, 0.3, 0.1)}, "split_fractions"),
    ({"sizes": ("small", "huge")}, "sizes"),
    ({"policy_size": "large", "sizes": ("small",)}, "policy_size"),
    ({"vocab_size_b": 1024}, "vocab_size_b"),
    ({"vocab_size": 100}, "vocab_size"),
    ({"bt_temperature": 0.0}, "bt_temperature"),
    ({"judge_repeat_weight": -1.0}, "repeat_weight"),
])
def test_impossible_worlds_fail_before_any_work(overrides, field):
    with pytest.raises(ConfigError, match=field):
        WorldConfig.from_dict(overrides)


def test_unknown_parameter_is_named():
    with pytest.raises(ConfigError, match="n_pairs"):
        WorldConfig.from_dict({"n_pairs": 10})


def test_default_yaml_is_a_valid_world_and_round_trips(tmp_path):
    from pathlib import Path

    default = WorldConfig.from_yaml(Path(__file__).parents[1] / "configs" / "mini" / "world.yaml")
    default.to_yaml(tmp_path / "w.yaml")
    assert WorldConfig.from_yaml(tmp_path / "w.yaml") == default
    assert default.fingerprint() != smoke_world_config().fingerprint()


def test_split_sizes_and_bradley_terry_by_hand():
    assert split_sizes(10, (0.6, 0.3, 0.1)) == [6, 3, 1]
    assert sum(split_sizes(97, (0.6, 0.3, 0.1))) == 97
    # P(a chosen) = sigmoid((0.5 - 0.1) / 0.2) = sigmoid(2) = 0.8808
    assert bradley_terry_choice(0.5, 0.1, 0.2, u=0.88)
    assert not bradley_terry_choice(0.5, 0.1, 0.2, u=0.89)
    assert bradley_terry_choice(0.0, 0.0, 0.2, u=0.49) and not bradley_terry_choice(0.0, 0.0, 0.2, u=0.5)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    return build_world(tiny_config(), root=tmp_path_factory.mktemp("worlds"))


def test_tiny_world_is_complete(tiny_world):
    config = tiny_world.config
    for world in text.WORLD_NAMES:
        data = tiny_world.preferences(world)
        assert list(data) == list(SPLITS)
        assert [len(data[s]) for s in SPLITS] == split_sizes(config.pairs(world), config.split_fractions)
        rows = [r for s in SPLITS for r in data[s]]
        held_out = tiny_world.eval_prompts(world)
        assert len(held_out) == config.held_out(world)
        assert not set(held_out) & {r["prompt"] for r in rows}  # held out from the pairs
        assert len({r["prompt"] for r in rows}) == len(rows)  # one pair per distinct prompt
        for r in rows:
            assert r["chosen"].strip() and r["rejected"].strip()
            assert r["chosen_gold"] == pytest.approx(tiny_world.judge.reward(r["prompt"], r["chosen"]))
            assert r["rejected_credit"] == [list(map(float, c)) for c in tiny_world.judge.word_credit(r["prompt"], r["rejected"])]
    tokenizer = AutoTokenizer.from_pretrained(tiny_world.tokenizer_path)
    other = AutoTokenizer.from_pretrained(tiny_world.tokenizer_b_path)
    assert tokenizer.get_vocab() != other.get_vocab()
    model = AutoModelForCausalLM.from_pretrained(tiny_world.sft_path("small"))
    assert model.config.vocab_size == len(tokenizer)
    assert AutoModelForCausalLM.from_pretrained(tiny_world.sft_path("small", tokenizer="b")).config.vocab_size == len(other)
    assert json.loads((tiny_world.root / "metrics.json").read_text())["timing/total_seconds"] > 0
    with pytest.raises(ConfigError, match="no SFT model of size 'large'"):
        tiny_world.sft_path("large")
    with pytest.raises(ConfigError, match="unknown"):
        tiny_world.preferences("mars")
    # gold credit carries onto tokens and keeps its sum
    row = tiny_world.preferences("id")["train"][0]
    offsets = tokenizer(row["chosen"], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert sum(credit_to_tokens(row["chosen_credit"], offsets)) == pytest.approx(sum(c[2] for c in row["chosen_credit"]))


def test_same_config_is_cached_and_a_rebuild_is_identical(tiny_world, tmp_path):
    stamp = (tiny_world.root / "world.json").stat().st_mtime_ns
    again = build_world(tiny_world.config, root=tiny_world.root.parent)
    assert again.root == tiny_world.root and (again.root / "world.json").stat().st_mtime_ns == stamp
    rebuilt = build_world(tiny_world.config, root=tmp_path)
    assert rebuilt.root == world_dir(tiny_world.config, tmp_path)
    for world in text.WORLD_NAMES:
        a, b = tiny_world.preferences(world), rebuilt.preferences(world)
        assert [a[s]._fingerprint for s in SPLITS] == [b[s]._fingerprint for s in SPLITS]
        assert a["train"].to_list() == b["train"].to_list()
