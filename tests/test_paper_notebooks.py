"""The notebooks at the paper tier, offline: papermill runs them with ``configs/paper/<notebook>.yaml`` whose
experiment points at tiny random GPT-NeoX (oracle) and Llama (policy) models, an UltraFeedback-layout
dataset made here, and the fake OpenAI-compatible judge server answering AlpacaEval 2, MT-Bench and
Arena-Hard prompts in their real formats. The same cells as at the mini tier; no gold judge is used."""

import json
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict

from conftest import train_tiny_tokenizer
from sepo.errors import ConfigError
from training_world import CHAT_TEMPLATE, ultrafeedback_rows, write_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_notebooks")
    tokenizer = train_tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE  # SFT models made by `sepo sft` carry their chat template
    data = root / "ultrafeedback_binarized"
    DatasetDict({"train_prefs": Dataset.from_dict(ultrafeedback_rows(8, 0)),
                 "test_prefs": Dataset.from_dict(ultrafeedback_rows(4, 1))}).save_to_disk(str(data))
    models = {"pythia-tiny": str(write_model(root / "pythia-tiny", arch="gpt_neox", tokenizer=tokenizer, seed=0)),
              "llama-tiny": str(write_model(root / "llama-tiny", arch="llama", tokenizer=tokenizer, seed=1))}
    return {"root": root, "data": str(data), "models": models}


def experiment(paper_world, base_url: str, tmp_path: Path, **paper) -> dict:
    """A paper-tier experiment on the tiny world: the shape of configs/paper/base.yaml, sizes and budgets cut."""
    base = yaml.safe_load((REPO / "configs" / "paper" / "base.yaml").read_text())
    base.update(cache_dir=str(tmp_path / "cache"), seeds=[0], oracle_size="pythia-tiny", policy_size="llama-tiny",
                oracle_epochs=1.0, oracle_lr=1e-3, policy_lr=1e-3, policy_epochs=1.0, batch_size=2, max_length=48,
                max_prompt_length=24, logging_steps=1, score_batch_size=4, eval_prompts=2, validation_prompts=1,
                policy_lr_grid=[], eval_samples=1, eval_batch_size=2, max_new_tokens=4)
    base["paper"] = {**base["paper"], "models": paper_world["models"], "data": paper_world["data"],
                     "max_eval_pairs": 2, "gradient_accumulation_steps": 1, "bf16": False, "gradient_checkpointing": False,
                     "accelerate_config": "", "num_processes": 1, "device": "cpu", "base_url": base_url,
                     "api_key_env": "FAKE_JUDGE_KEY", "baseline_outputs": {}, "lc_df_gamed_path": "",
                     "drop_prompt_longer_than": 0, "drop_response_shorter_than": 0, "bootstrap_rounds": 10, **paper}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(base))
    return {"experiment": str(path)}


@pytest.fixture
def judge_server(monkeypatch):
    from fake_openai import FakeJudgeServer

    monkeypatch.setenv("FAKE_JUDGE_KEY", "sk-test")
    with FakeJudgeServer() as server:
        yield server


def test_pipeline_paper_tier_runs_the_stages_and_the_benchmarks(paper_world, judge_server, tmp_path):
    from sepo.notebook import config_from
    from sepo.pipeline import Pipeline
    from sepo.tables import main_table

    pipe = Pipeline(config_from(experiment(paper_world, judge_server.base_url, tmp_path), notebook={}))
    frame, claims, search = main_table(pipe, ["DPO", "SePO"])
    print(frame.T)
