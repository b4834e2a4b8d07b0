"""Batched sampling: left padding, EOS handling, determinism for a seed."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_llama
from sepo.errors import ConfigError
from sepo.generation import left_pad, sample_responses, strip_after_eos

PROMPTS = ["review of the pizza at luigi 's :", "the soup", "i did not like the dessert at all ."]


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(len(tokenizer), seed=3, hidden=32)


def test_left_pad_and_strip_by_hand():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert strip_after_eos([4, 5, 2, 6, 2], eos_id=2) == [4, 5]
    assert strip_after_eos([4, 5], eos_id=2) == [4, 5]


def test_shape_and_determinism_for_a_seed(model, tokenizer):
    a = sample_responses(model, tokenizer, PROMPTS, num_samples=3, max_new_tokens=8, seed=7, batch_size=2)
    b = sample_responses(model, tokenizer, PROMPTS, num_samples=3, max_new_tokens=8, seed=7, batch_size=2)
    c = sample_responses(model, tokenizer, PROMPTS, num_samples=3, max_new_tokens=8, seed=8, batch_size=2)
    assert a == b and a != c
    assert [len(s) for s in a] == [3, 3, 3] and all(isinstance(x, str) for s in a for x in s)
    assert len({x for s in a for x in s}) > 3  # samples differ within a prompt
    assert model.training is False


def test_left_padding_does_not_change_greedy_output(model, tokenizer):
    alone = [sample_responses(model, tokenizer, [p], temperature=0, max_new_tokens=6)[0] for p in PROMPTS]
    batched = sample_responses(model, tokenizer, PROMPTS, temperature=0, max_new_tokens=6, batch_size=3)
    assert batched == alone


def test_stops_at_eos_and_returns_no_special_tokens(tokenizer):
    model = tiny_llama(len(tokenizer), seed=4, hidden=32)
    eos_bias = torch.zeros(len(tokenizer))
    eos_bias[tokenizer.eos_token_id] = 100.0
    model.lm_head.register_forward_hook(lambda m, i, out: out + eos_bias)  # a model that always says EOS
    assert sample_responses(model, tokenizer, PROMPTS[:2], max_new_tokens=5) == [[""], [""]]
    forced = sample_responses(model, tokenizer, PROMPTS[:1], max_new_tokens=5, min_new_tokens=2, seed=1)[0][0]
    assert forced and "</s>" not in forced and "<pad>" not in forced


def test_bad_arguments_fail(model, tokenizer):
    for kwargs, field in (({"num_samples": 0}, "num_samples"), ({"max_new_tokens": 0}, "max_new_tokens"),
                          ({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"batch_size": 0}, "batch_size")):
        with pytest.raises(ConfigError, match=field):
            sample_responses(model, tokenizer, PROMPTS, **kwargs)
