"""Small causal LMs of the mini world: ``LlamaForCausalLM`` in named sizes over a world tokenizer.

The sizes span more than 10x in parameters (for the weak-to-strong question: a small oracle
supervising a larger policy) while the largest still trains in tens of seconds on two CPU cores.
Input and output embeddings are tied, as in the small models of the papers' families.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sepo.errors import ConfigError

# name -> (hidden size, layers, attention heads); the MLP is 8/3 x hidden (Llama's ratio), rounded to 8.
MODEL_SIZES: dict[str, tuple[int, int, int]] = {
    "small": (64, 2, 4),
    "medium": (128, 3, 4),
    "large": (176, 4, 4),
}


def model_config(size: str, tokenizer, max_positions: int = 256) -> LlamaConfig:
    """The ``LlamaConfig`` of a named size over ``tokenizer`` (its vocabulary and special token ids)."""
    if size not in MODEL_SIZES:
        raise ConfigError(f"model size {size!r}: unknown; known sizes are {list(MODEL_SIZES)}")
    hidden, layers, heads = MODEL_SIZES[size]
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=8 * round(hidden * 8 / 3 / 8),
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def make_model(size: str, tokenizer, seed: int, max_positions: int = 256) -> LlamaForCausalLM:
    """A freshly initialised model of a named size (weights drawn from ``seed``)."""
    config = model_config(size, tokenizer, max_positions)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def count_parameters(model) -> int:
    """Distinct trainable parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
