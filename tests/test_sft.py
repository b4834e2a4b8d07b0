"""SFT stage: labels mask the prompt, the loss falls, the run directory is complete, bad configs fail early."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict
from transformers import AutoModelForCausalLM

from sepo.data import tokenize_prompt, tokenize_response
from sepo.errors import ConfigError, DataError
from sepo.sft import IGNORE, SFTConfig, run_sft, tokenize_sft

ROWS = [("review of the soup :", "the soup was very good ."), ("review of the pizza :", "the pizza was not bad .")] * 16


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("sft")
    DatasetDict({"train": Dataset.from_dict({"prompt": [p for p, _ in ROWS], "completion": [c for _, c in ROWS]})}
                ).save_to_disk(str(root / "data"))
    tokenizer.save_pretrained(str(root / "tokenizer"))
    return root


def config(paths, name, **overrides):
    values = dict(output_dir=str(paths / name), data_path=str(paths / "data"), model_size="small",
                  tokenizer_path=str(paths / "tokenizer"), max_steps=30, per_device_batch_size=8, learning_rate=1e-2,
                  max_length=32, max_prompt_length=16, max_positions=32, logging_steps=10)
    values.update(overrides)
    return SFTConfig(**values)


def test_labels_mask_the_prompt(paths, tokenizer):
    data, report = tokenize_sft(Dataset.from_dict({"prompt": [ROWS[0][0]], "completion": [ROWS[0][1]]}), tokenizer,
                                config(paths, "unused"))
    prompt = tokenize_prompt(tokenizer, ROWS[0][0])
    response, _ = tokenize_response(tokenizer, ROWS[0][1])
    assert data[0]["input_ids"] == prompt + response
    assert data[0]["labels"] == [IGNORE] * len(prompt) + response
    assert response[-1] == tokenizer.eos_token_id and report["data/rows_out"] == 1
    with pytest.raises(DataError, match="row 0: field 'completion'"):
        tokenize_sft(Dataset.from_dict({"prompt": ["x"], "completion": [" "]}), tokenizer, config(paths, "unused"))


def test_loss_falls_and_run_directory_is_complete(paths, tokenizer):
    metrics = run_sft(config(paths, "run"))
    logged = json.loads((paths / "run" / "metrics.json").read_text())
    assert logged == pytest.approx(metrics)
    assert metrics["train/loss"] < 0.5 * metrics["train/loss_mean"] and metrics["train/global_step"] == 30
    assert (paths / "run" / "config.yaml").exists()
    model = AutoModelForCausalLM.from_pretrained(paths / "run" / "model")
    assert model.config.vocab_size == len(tokenizer) and model.config.eos_token_id == tokenizer.eos_token_id


def test_bad_configs_fail_before_training(paths):
    with pytest.raises(ConfigError, match="exactly one of model_path and model_size"):
        config(paths, "x", model_path=str(paths / "run" / "model"))
    with pytest.raises(ConfigError, match="known sizes"):
        config(paths, "x", model_size="huge")
    with pytest.raises(ConfigError, match="max_positions"):
        config(paths, "x", max_positions=16)
    with pytest.raises(ConfigError, match="data_path"):
        run_sft(config(paths, "x", data_path=str(paths / "missing")))
    assert not (paths / "x").exists()
