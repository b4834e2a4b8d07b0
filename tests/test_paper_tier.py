"""Paper tier offline: the paper configs drive oracle -> scoring -> SePO on tiny GPT-NeoX / Llama models
and an UltraFeedback-layout dataset on disk, through the same functions a GPU run uses."""

import json
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from conftest import train_tiny_tokenizer
from sepo.errors import ConfigError, DataError
from sepo.oracle import OracleConfig, run_oracle
from sepo.paper import prepare_preferences, split_conversation
from sepo.policy import PolicyConfig, run_policy
from training_world import CHAT_TEMPLATE, ultrafeedback_rows, write_model

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper"
LONG_PROMPT = " ".join(["the soup was not bad , and the bread was fine ."] * 200)  # far over 1,900 tokens


def ultrafeedback_split(n: int, seed: int, extra_rows: bool) -> Dataset:
    rows = ultrafeedback_rows(n, seed)
    if extra_rows:
        for prompt, chosen, rejected in ((LONG_PROMPT, "fine .", "bad ."), ("review of the soup :", "the soup was very good .", "ok")):
            user = {"role": "user", "content": prompt}
            rows["prompt"].append(prompt)
            rows["prompt_id"].append(f"extra-{len(rows['prompt'])}")
            rows["chosen"].append([user, {"role": "assistant", "content": chosen}])
            rows["rejected"].append([user, {"role": "assistant", "content": rejected}])
            rows["score_chosen"].append(8.0)
            rows["score_rejected"].append(2.0)
    return Dataset.from_dict(rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_world")
    tokenizer = train_tiny_tokenizer()
    tokenizer.chat_template = None  # like Pythia: the config's template is applied
    data = root / "ultrafeedback_binarized"
    DatasetDict({"train_prefs": ultrafeedback_split(24, 0, extra_rows=True),
                 "test_prefs": ultrafeedback_split(8, 1, extra_rows=False)}).save_to_disk(str(data))
    return {
        "root": root, "data": data,
        "pythia": write_model(root / "pythia-tiny", arch="gpt_neox", tokenizer=tokenizer, seed=0),
        "llama": write_model(root / "llama-tiny", arch="llama", tokenizer=tokenizer, seed=1, hidden=32),
    }


CPU_OVERRIDES = dict(bf16=False, per_device_batch_size=4, gradient_accumulation_steps=1, learning_rate=5e-3,
                     chat_template=str(PAPER / "chat_template.jinja"))


def test_paper_configs_hold_the_papers_setting():
    for path in sorted(PAPER.glob("oracle_*.yaml")) + sorted(PAPER.glob("policy_*.yaml")):
        cfg = (OracleConfig if path.name.startswith("oracle") else PolicyConfig).from_yaml(path)
        assert cfg.learning_rate == 5e-7 and cfg.num_train_epochs == 1 and cfg.bf16, path.name
        assert cfg.per_device_batch_size * cfg.gradient_accumulation_steps * 8 == 128, path.name  # 8 GPUs
        if isinstance(cfg, OracleConfig):
            assert (cfg.data_path, cfg.oracle_split, cfg.target_split) == ("HuggingFaceH4/ultrafeedback_binarized", "train_prefs", "train_prefs")
            assert (cfg.max_length, cfg.drop_prompt_longer_than, cfg.drop_response_shorter_than) == (2048, 1900, 8)
        else:
            assert cfg.uses_reference == (cfg.loss == "dpo")
            assert cfg.data_path.startswith("runs/paper/oracle-")  # the oracle run's scored pairs
    assert PolicyConfig.from_yaml(PAPER / "policy_sepo_pythia-6.9b.yaml").selection_kwargs == {"k_w": 0.3, "k_l": 0.3}
    from sepo.cli import stage_functions

    evaluations = sorted(PAPER.glob("eval_*.yaml"))
    assert evaluations
    for path in evaluations:  # the evaluate stage of the CLI reads them; the policy was trained on chat prompts
        config_class, _ = stage_functions("evaluate")
        cfg = config_class.from_yaml(path)
        assert cfg.chat_template and cfg.judge != "gold" and cfg.model_dir.startswith("runs/paper/policy-")


def test_oracle_scoring_sepo_on_tiny_pythia_and_llama(world):
    oracle = OracleConfig.from_yaml(
        PAPER / "oracle_pythia-410m.yaml", reference_path=str(world["pythia"]), data_path=str(world["data"]),
        output_dir=str(world["root"] / "oracle"), max_eval_pairs=8, **CPU_OVERRIDES)
    metrics = run_oracle(oracle)
    # 26 rows; half train the oracle, the other half is scored; the two bad rows are dropped and counted
    long_drops = metrics["data/oracle/dropped_long_prompt"] + metrics["data/target/dropped_long_prompt"]
    short_drops = metrics["data/oracle/dropped_short_response"] + metrics["data/target/dropped_short_response"]
    assert (long_drops, short_drops) == (1, 1)
    assert metrics["data/oracle/rows_in"] == 13 and metrics["data/target/rows_in"] == 13
    assert metrics["data/oracle_pairs"] + metrics["data/target_pairs_scored"] == 24
    assert metrics["data/eval/rows_out"] == 8
    with pytest.raises(ConfigError, match="chat_template"):
        run_oracle(OracleConfig.from_dict(oracle.to_dict(), chat_template="missing/template.jinja",
                                          output_dir=str(world["root"] / "no-template")))
    assert not (world["root"] / "no-template").exists()
    # the prompts went through the chat template; responses are the last assistant turn + EOS
    scored = json.loads((oracle.run_dir / "scored" / "scoring.json").read_text())
    assert scored["beta"] == oracle.beta

    policy = PolicyConfig.from_yaml(
        PAPER / "policy_sepo_pythia-2.8b.yaml", model_path=str(world["llama"]), data_path=str(oracle.run_dir),
        output_dir=str(world["root"] / "policy"), max_steps=2, **CPU_OVERRIDES)
    metrics = run_policy(policy)
    assert metrics["reference_loaded"] is False and metrics["train/global_step"] == 2
    assert metrics["data/train_pairs"] == 12  # the scored pairs
    assert (policy.run_dir / "model" / "model.safetensors").exists()


def test_conversation_layout_is_split_into_prompt_and_last_turn(world):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(world["pythia"]))
    tokenizer.chat_template = CHAT_TEMPLATE
    data, report = prepare_preferences(ultrafeedback_split(2, 0, extra_rows=True), tokenizer, max_length=2048,
                                       max_prompt_length=1900, drop_prompt_longer_than=1900, drop_response_shorter_than=8)
    assert (report.rows_in, report.rows_out, report.dropped_long_prompt, report.dropped_short_response) == (4, 2, 1, 1)
    row = data[0]
    assert tokenizer.decode(row["prompt_ids"]).endswith("<|assistant|>\n")
    assert row["chosen_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(row["chosen_ids"][:-1]) == row["chosen"][-1]["content"]
    assert "score_chosen" in data.column_names  # other columns are kept


def test_malformed_conversations_name_the_row():
    user = {"role": "user", "content": "hi"}
    good = {"prompt": "hi", "chosen": [user, {"role": "assistant", "content": "a"}],
            "rejected": [user, {"role": "assistant", "content": "b"}]}
    assert split_conversation(good, 0)["prompt"] == [user]
    other = dict(good, rejected=[{"role": "user", "content": "bye"}, {"role": "assistant", "content": "b"}])
    with pytest.raises(DataError, match="row 7: 'chosen' and 'rejected' differ"):
        split_conversation(other, 7)
    with pytest.raises(DataError, match="row 3: field 'chosen' must end with an assistant"):
        split_conversation(dict(good, chosen=[user]), 3)
    with pytest.raises(DataError, match="chat template"):
        prepare_preferences(Dataset.from_dict({k: [v] for k, v in good.items()}), train_tiny_tokenizer(),
                            max_length=64, max_prompt_length=32)


def test_accelerate_configs_load_with_accelerates_own_loader():
    """The multi-GPU configs the README's `accelerate launch` lines name are valid accelerate configs."""
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"ddp.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP", "deepspeed_zero3.yaml": "DEEPSPEED"}
    for name, kind in expected.items():
        cfg = load_config_from_file(str(REPO / "configs" / "accelerate" / name))
        assert cfg.distributed_type.name == kind and cfg.mixed_precision == "bf16", name
        # the paper's global batch of 128 = per-device batch x accumulation x processes (2 x 8 x 8)
        assert cfg.num_processes == 8, name
    zero3 = load_config_from_file(str(REPO / "configs" / "accelerate" / "deepspeed_zero3.yaml")).deepspeed_config
    assert zero3["zero_stage"] == 3
    readme = (REPO / "configs" / "accelerate" / "README.md").read_text()
    assert all(f"configs/accelerate/{name}" in readme for name in expected)
