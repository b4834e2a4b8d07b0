"""Batched sampling: left padding, EOS handling, determinism for a seed."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_llama
from sepo.errors import ConfigError
from transformers import LogitsProcessorList

from sepo.generation import (InverseCdfSampling, PreallocatedLayer, cache_for, left_pad, preallocated_cache,
                             sample_responses, strip_after_eos)

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


def test_preallocated_cache_samples_the_tokens_of_the_default_cache(model, tokenizer):
    """The sampler's cache changes where keys and values live, not what is drawn: token for token equal."""
    ids, mask = left_pad([[1, 5, 6, 7, 9], [1, 8], [1, 4, 4]], tokenizer.pad_token_id)

    def draw(**cache):
        torch.manual_seed(11)
        with torch.inference_mode():
            return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, min_new_tokens=3,
                                  num_return_sequences=2, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **cache)

    for capacity in (ids.shape[1] + 12, 2):  # room for everything; too small, so the buffers grow while sampling
        assert torch.equal(draw(past_key_values=preallocated_cache(capacity)), draw())


def test_preallocated_layer_by_hand():
    layer = PreallocatedLayer(capacity=3)
    k, v = torch.randn(2, 1, 2, 4), torch.randn(2, 1, 2, 4)
    keys, values = layer.update(k, v)
    assert torch.equal(keys, k) and torch.equal(values, v) and layer._buffers[0].shape[-2] == 3
    k2, v2 = torch.randn(2, 1, 2, 4), torch.randn(2, 1, 2, 4)  # beyond the capacity: the buffers double
    keys, values = layer.update(k2, v2)
    assert torch.equal(keys, torch.cat([k, k2], dim=-2)) and torch.equal(values, torch.cat([v, v2], dim=-2))
    assert layer.get_seq_length() == 4 and layer._buffers[0].shape[-2] == 6
    layer.batch_select_indices(torch.tensor([1]))  # a reordering leaves a fresh tensor; the next update rebuffers
    k3, v3 = torch.randn(1, 1, 1, 4), torch.randn(1, 1, 1, 4)
    keys, _ = layer.update(k3, v3)
    assert torch.equal(keys, torch.cat([k[1:], k2[1:], k3], dim=-2))


def test_cache_for_leaves_sliding_window_models_to_generate(model):
    from transformers import MistralConfig

    assert "past_key_values" in cache_for(model, 8)
    sliding = MistralConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                            num_key_value_heads=2, sliding_window=4)
    assert cache_for(type("M", (), {"config": sliding})(), 8) == {}


def test_inverse_cdf_sampling_draws_each_token_with_its_probability():
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    scores = probs.log().expand(40000, 4).clone()
    torch.manual_seed(3)
    out = InverseCdfSampling()(None, scores)  # (B, V): 0 at the drawn token, -inf elsewhere
    assert ((out == 0).sum(-1) == 1).all()
    freq = (out == 0).float().mean(0)
    assert torch.allclose(freq, probs, atol=0.01) and freq[3] == 0  # a token of probability 0 is never drawn
    torch.manual_seed(3)
    hot = (InverseCdfSampling(temperature=0.5)(None, scores) == 0).float().mean(0)  # p^2, renormalised
    assert torch.allclose(hot, probs ** 2 / (probs ** 2).sum(), atol=0.01)
    torch.manual_seed(3)
    nucleus = (InverseCdfSampling(top_p=0.6)(None, scores) == 0).float().mean(0)  # the top tokens holding 0.6
    assert torch.allclose(nucleus, torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.01)
    with pytest.raises(ConfigError, match="temperature"):
        InverseCdfSampling(temperature=0.0)


def test_sampled_tokens_do_not_depend_on_the_cache_or_the_batch_layout(model, tokenizer):
    """The sampler's draws follow the rows: the preallocated cache gives the default cache's tokens, and a
    prompt's samples are the rows after it whatever else is in the batch."""
    ids, mask = left_pad([[1, 5, 6, 7, 9], [1, 5, 6, 7, 9], [1, 8], [1, 8]], tokenizer.pad_token_id)

    def draw(**cache):
        torch.manual_seed(11)
        with torch.inference_mode():
            return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, min_new_tokens=3, do_sample=False,
                                  logits_processor=LogitsProcessorList([InverseCdfSampling()]),
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **cache)

    assert torch.equal(draw(past_key_values=preallocated_cache(2)), draw())
    drawn = draw()[:, ids.shape[1]:]
    assert (drawn[:, :3] != tokenizer.eos_token_id).all()  # min_new_tokens ran before the draw
    assert not torch.equal(drawn[0], drawn[1])  # two samples of one prompt differ
