"""World tokenizers (byte-level BPE) and model sizes."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sepo.data import tokenize_prompt, tokenize_response
from sepo.errors import ConfigError
from sepo.world import text
from sepo.world.models import MODEL_SIZES, count_parameters, make_model
from sepo.world.tokenizer import round_trip_failures, train_tokenizer


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(0)
    pairs = text.sample_corpus("id", 300, rng) + text.sample_corpus("ood", 100, rng)
    return [p for p, _ in pairs] + [r for _, r in pairs]


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_tokenizer(corpus, vocab_size=400)


def test_tokenizer_round_trips_and_splits_some_words(tokenizer, corpus):
    assert round_trip_failures(tokenizer, corpus + ["Unseen words: zebra, café!"]) == []
    assert len(tokenizer) == 400
    pieces = {w: tokenizer.tokenize(" " + w) for w in ("the", "disappointing", "receptionist")}
    assert len(pieces["the"]) == 1
    assert max(len(pieces["disappointing"]), len(pieces["receptionist"])) > 1


def test_special_tokens_and_data_encoding(tokenizer):
    prompt = tokenize_prompt(tokenizer, "Review of the soup at Luigi's:")
    assert prompt[0] == tokenizer.bos_token_id
    ids, offsets = tokenize_response(tokenizer, "The soup was good.")
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.bos_token_id not in ids
    assert offsets[-1] == (18, 18)
    assert len({tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}) == 3


def test_second_vocabulary_cuts_text_differently(corpus, tokenizer):
    other = train_tokenizer(corpus, vocab_size=320)
    assert other.get_vocab() != tokenizer.get_vocab()
    with pytest.raises(ConfigError, match="vocab_size"):
        train_tokenizer(corpus, vocab_size=100)


def test_sizes_span_ten_times_and_round_trip(tokenizer, tmp_path):
    counts = {size: count_parameters(make_model(size, tokenizer, seed=0)) for size in MODEL_SIZES}
    assert max(counts.values()) >= 10 * min(counts.values())
    assert list(counts.values()) == sorted(counts.values())
    model = make_model("small", tokenizer, seed=0)
    assert count_parameters(make_model("small", tokenizer, seed=1)) == counts["small"]
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    loaded_tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    ids = torch.tensor([tokenize_prompt(loaded_tok, "Review of the soup at Luigi's:")])
    assert loaded_tok.get_vocab() == tokenizer.get_vocab()
    torch.testing.assert_close(loaded(ids).logits, model.eval()(ids).logits)
    with pytest.raises(ConfigError, match="unknown"):
        make_model("huge", tokenizer, seed=0)
