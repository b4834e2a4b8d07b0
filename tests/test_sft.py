"""SFT stage: labels mask the prompt, the loss falls, the run directory is complete, bad configs fail early."""

from __future__ import annotations

import json
import math

import pytest
from datasets import Dataset, DatasetDict
from transformers import AutoModelForCausalLM, AutoTokenizer

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


# --------------------------------------------------------------------------------------------
# Conversations (TRL's conversational format, UltraChat-200k's layout)
# --------------------------------------------------------------------------------------------
def conversation(subject: str, answer: str, follow_up: bool) -> list[dict]:
    messages = [{"role": "user", "content": f"review of the {subject} :"}, {"role": "assistant", "content": answer}]
    if follow_up:
        messages += [{"role": "user", "content": "and the bread ?"}, {"role": "assistant", "content": "the bread was fine ."}]
    return messages


CONVERSATIONS = [conversation("soup", "the soup was very good .", True), conversation("pizza", "the pizza was not bad .", False)] * 16


def test_conversation_labels_cover_assistant_turns_and_their_eos_only(paths, tokenizer):
    from training_world import CHAT_TEMPLATE

    chat = type(tokenizer).from_pretrained(str(paths / "tokenizer"))
    chat.chat_template = CHAT_TEMPLATE
    data, report = tokenize_sft(Dataset.from_dict({"messages": CONVERSATIONS[:1], "prompt": ["unused"]}), chat,
                                config(paths, "unused", max_length=128, max_positions=128))
    ids, labels = data[0]["input_ids"], data[0]["labels"]
    assert chat.decode(ids) == chat.apply_chat_template(CONVERSATIONS[0], tokenize=False)
    labelled = [t for t in labels if t != IGNORE]
    # each assistant turn and the EOS the template closes it with; no user turn, no generation prompt
    assert chat.decode(labelled) == "the soup was very good .</s>the bread was fine .</s>"
    assert labelled.count(chat.eos_token_id) == 2 and report["data/assistant_tokens"] == len(labelled)
    # each labelled run sits right after a generation prompt: what the model sees when it answers
    first = labels.index(next(t for t in labels if t != IGNORE))
    prompt = chat.apply_chat_template(CONVERSATIONS[0][:1], tokenize=False, add_generation_prompt=True)
    assert chat.decode(ids[:first]) == prompt
    # cut at max_length: the first three assistant tokens stay; cut before any, the conversation is dropped
    cut, cut_report = tokenize_sft(Dataset.from_dict({"messages": CONVERSATIONS[:2]}), chat,
                                   config(paths, "unused", max_length=first + 3, max_prompt_length=8, max_positions=128))
    assert cut[0]["labels"] == labels[: first + 3] and cut_report["data/truncated"] == 2
    with pytest.raises(DataError, match="no conversation left.*'dropped_truncated': 1"):
        tokenize_sft(Dataset.from_dict({"messages": CONVERSATIONS[:1]}), chat,
                     config(paths, "unused", max_length=first, max_prompt_length=8, max_positions=128))


@pytest.mark.parametrize("messages,message", [
    ([{"role": "user", "content": "hi"}], r"line 2: field 'messages' has no assistant turn"),
    ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}], r"line 2: field 'messages\[1\].role' is 'bot'"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}], r"line 2: field 'messages\[1\].content' must be a string"),
    ([], r"line 2: field 'messages' must be a non-empty list"),
])
def test_bad_conversations_fail_naming_file_line_and_field_and_write_nothing(paths, messages, message):
    from training_world import CHAT_TEMPLATE

    data = paths / f"bad-{abs(hash(message))}.jsonl"
    data.write_text(json.dumps({"messages": CONVERSATIONS[0]}) + "\n" + json.dumps({"messages": messages}) + "\n")
    out = paths / f"bad-run-{abs(hash(message))}"
    with pytest.raises(DataError, match=rf"{data} " + message):
        run_sft(config(paths, out.name, data_path=str(data), chat_template=CHAT_TEMPLATE))
    assert not out.exists()


def test_conversations_need_a_chat_template(paths):
    data = paths / "conversations.jsonl"
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in CONVERSATIONS[:2]))
    with pytest.raises(ConfigError, match="no chat template; set SFTConfig.chat_template"):
        run_sft(config(paths, "no-template", data_path=str(data)))
    assert not (paths / "no-template").exists()


def test_sft_on_conversations_learns_the_assistant_turns(paths, tokenizer):
    from training_world import CHAT_TEMPLATE

    DatasetDict({"train_sft": Dataset.from_dict({"prompt": [m[0]["content"] for m in CONVERSATIONS], "messages": CONVERSATIONS})}
                ).save_to_disk(str(paths / "ultrachat"))
    metrics = run_sft(config(paths, "chat-run", data_path=str(paths / "ultrachat"), split="train_sft", chat_template=CHAT_TEMPLATE,
                             max_length=48, max_positions=48, max_steps=12, logging_steps=4))
    # from ~log(vocabulary) at random weights to under half of it in 12 steps (deterministic on CPU)
    assert metrics["train/loss"] < 0.8 * metrics["train/loss_mean"] and metrics["train/loss"] < 0.5 * math.log(len(tokenizer))
    assert metrics["data/rows_out"] == 32 and metrics["data/assistant_tokens"] > 0
    saved = AutoTokenizer.from_pretrained(paths / "chat-run" / "model")
    assert saved.chat_template == CHAT_TEMPLATE  # the SFT model carries the template it was trained with


def test_paper_sft_config_makes_the_reference_model_from_ultrachat():
    from pathlib import Path

    cfg = SFTConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "paper" / "sft_tinyllama-1.1b_ultrachat.yaml")
    assert (cfg.data_path, cfg.split) == ("HuggingFaceH4/ultrachat_200k", "train_sft")
    assert cfg.chat_template.endswith(".jinja") and cfg.bf16 and cfg.num_train_epochs == 1
    assert cfg.per_device_batch_size * cfg.gradient_accumulation_steps * 8 == 128
    assert cfg.output_dir == "runs/paper/sft-tinyllama-1.1b"  # the TinyLlama oracle and policies start from its model/


def test_length_buckets_give_the_batchs_loss_and_the_same_training(paths, tokenizer):
    """Rows of similar length run together, each group cut to its longest row: the same loss, and a run that
    trains the same weights up to float rounding."""
    import torch
    from transformers import TrainingArguments

    from sepo.sft import SFTCollator, SFTTrainer
    from sepo.world.models import make_model

    data, _ = tokenize_sft(Dataset.from_dict({"prompt": [p for p, _ in ROWS[:6]] + ["a much longer prompt about the pasta :"],
                                              "completion": [c for _, c in ROWS[:6]] + ["it was good , very good ."]}),
                           tokenizer, config(paths, "unused"))
    batch = SFTCollator(tokenizer.pad_token_id)([dict(row) for row in data])
    count = int((batch["labels"][:, 1:] != IGNORE).sum())
    args = TrainingArguments(output_dir=str(paths / "buckets"), use_cpu=True, report_to=[], disable_tqdm=True)
    losses, grads = [], []
    for buckets in (1, 2, 3):
        model = make_model("small", tokenizer, seed=0, max_positions=64)
        trainer = SFTTrainer(model=model, args=args, length_buckets=buckets)
        loss = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(count))
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert losses[1] == pytest.approx(losses[0], abs=1e-6) and losses[2] == pytest.approx(losses[0], abs=1e-6)
    assert torch.allclose(grads[1], grads[0], atol=1e-6) and torch.allclose(grads[2], grads[0], atol=1e-6)
    whole = run_sft(config(paths, "whole", max_steps=6, logging_steps=3))
    bucketed = run_sft(config(paths, "bucketed", max_steps=6, logging_steps=3, length_buckets=2))
    assert bucketed["train/loss_mean"] == pytest.approx(whole["train/loss_mean"], rel=1e-4)
