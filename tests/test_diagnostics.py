"""Held-out diagnostics against log-probs computed one response at a time by hand."""

import math

import pytest
import torch
from datasets import Dataset

from sepo.diagnostics import heldout_logps


def by_hand(model, tokenizer, prompt, response):
    """Per-token log-probs of ``response`` + EOS after ``prompt``, from the full softmax."""
    p = tokenizer(prompt)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([p + r])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    return [float(logps[len(p) - 1 + i, t]) for i, t in enumerate(r)]


def test_heldout_logps_match_a_hand_computation(model_pair, tokenizer):
    model = model_pair[0]
    pairs = Dataset.from_dict({"prompt": ["the soup", "a day"], "chosen": [" was very good .", " was fine ."],
                               "rejected": [" was bad .", " was not good at all ."]})
    out = heldout_logps(model, tokenizer, pairs, max_length=64, max_prompt_length=16, batch_size=1)
    hand = {side: [by_hand(model, tokenizer, p, r) for p, r in zip(pairs["prompt"], pairs[side])] for side in ("chosen", "rejected")}
    assert out["chosen_logp"] == pytest.approx(sum(sum(v[:-1]) / len(v[:-1]) for v in hand["chosen"]) / 2, abs=1e-5)
    assert out["rejected_logp"] == pytest.approx(sum(sum(v[:-1]) / len(v[:-1]) for v in hand["rejected"]) / 2, abs=1e-5)
    eos = [v[-1] for side in hand.values() for v in side]
    assert out["eos_logp"] == pytest.approx(sum(eos) / len(eos), abs=1e-5) and out["n_pairs"] == 2
    # batching does not change the numbers
    assert heldout_logps(model, tokenizer, pairs, max_length=64, max_prompt_length=16, batch_size=2) == pytest.approx(out)
    # a response cut at max_length has no EOS to score
    long = Dataset.from_dict({"prompt": ["a day"], "chosen": [" was not good at all today ."], "rejected": [" was very very bad today ."]})
    cut = heldout_logps(model, tokenizer, long, max_length=6, max_prompt_length=2)
    assert math.isnan(cut["eos_logp"]) and cut["chosen_logp"] < 0
