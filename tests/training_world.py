"""A tiny on-disk world for the training-stage tests: models, tokenizers and preference data in temp dirs.

Nothing is downloaded: the tokenizer is trained here (see ``conftest.train_tiny_tokenizer``) and the
models are random ``LlamaForCausalLM`` / ``GPTNeoXForCausalLM`` with hidden size 16.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict

from conftest import train_tiny_tokenizer

# A chat template in the Zephyr / TinyLlama-Chat style (each turn ends with the EOS token).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

SUBJECTS = ["pasta", "soup", "pizza", "bread", "dessert", "room", "staff", "service"]
GOOD = ["very good", "wonderful", "clean", "kind", "fine", "friendly"]
BAD = ["bad", "slow", "terrible", "not good at all", "not like"]


def tiny_model(arch: str, vocab_size: int, seed: int = 0, hidden: int = 16, layers: int = 1):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                          max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)
        return LlamaForCausalLM(cfg)
    if arch == "gpt_neox":
        cfg = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=layers, num_attention_heads=2, max_position_embeddings=256,
                            bos_token_id=1, eos_token_id=2, pad_token_id=0, hidden_dropout=0.0, attention_dropout=0.0)
        return GPTNeoXForCausalLM(cfg)
    raise ValueError(arch)


def write_model(path: Path, arch: str = "llama", seed: int = 0, chat_template: str | None = None,
                tokenizer=None, hidden: int = 16) -> Path:
    tokenizer = tokenizer or train_tiny_tokenizer()
    if chat_template:
        tokenizer.chat_template = chat_template
    tiny_model(arch, len(tokenizer), seed, hidden=hidden).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def preference_rows(n: int, seed: int) -> dict[str, list]:
    """Review prompts; the chosen answer praises, the rejected one complains."""
    rng = random.Random(seed)
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for _ in range(n):
        subject = rng.choice(SUBJECTS)
        rows["prompt"].append(f"review of the {subject} :")
        rows["chosen"].append(f" the {subject} was {rng.choice(GOOD)} .")
        rows["rejected"].append(f" the {subject} was {rng.choice(BAD)} .")
    return rows


def write_preferences(path: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    DatasetDict({split: Dataset.from_dict(preference_rows(n, seed + i)) for i, (split, n) in enumerate(sizes.items())}).save_to_disk(str(path))
    return path


def ultrafeedback_rows(n: int, seed: int) -> dict[str, list]:
    """The ``HuggingFaceH4/ultrafeedback_binarized`` layout: whole conversations and scores."""
    plain = preference_rows(n, seed)
    rng = random.Random(seed)
    rows = {"prompt": [], "prompt_id": [], "chosen": [], "rejected": [], "score_chosen": [], "score_rejected": []}
    for i, (prompt, chosen, rejected) in enumerate(zip(plain["prompt"], plain["chosen"], plain["rejected"])):
        user = {"role": "user", "content": prompt}
        rows["prompt"].append(prompt)
        rows["prompt_id"].append(f"p{i}")
        rows["chosen"].append([user, {"role": "assistant", "content": chosen.strip()}])
        rows["rejected"].append([user, {"role": "assistant", "content": rejected.strip()}])
        rows["score_chosen"].append(float(rng.randint(7, 10)))
        rows["score_rejected"].append(float(rng.randint(1, 6)))
    return rows
