"""Subword tokenizers of the mini world, trained with ``tokenizers`` on the world's own text.

A byte-level BPE (as in GPT-2 / Pythia) is trained on the text, so frequent words are one token and
rarer ones split into several, and ``decode(encode(text)) == text`` for every string (bytes never
fall out of the vocabulary). The result is a ``transformers.PreTrainedTokenizerFast`` with
``<pad>``, ``<s>`` (BOS, prepended to every encoded text when special tokens are added) and
``</s>`` (EOS), saved with ``save_pretrained`` and loaded with ``AutoTokenizer.from_pretrained``.

Two vocabulary sizes give two tokenizers that cut the same text differently (the cross-tokenizer
question needs an oracle and a policy that do not share token ids).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from sepo.errors import ConfigError

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, BOS, EOS)


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of ``vocab_size`` tokens (256 bytes + 3 special tokens + merges) on ``texts``."""
    floor = len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIAL_TOKENS)
    if vocab_size <= floor:
        raise ConfigError(f"vocab_size = {vocab_size}: must exceed {floor} (the byte alphabet and special tokens)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   clean_up_tokenization_spaces=False)


def round_trip_failures(tokenizer, texts: Iterable[str]) -> list[str]:
    """The texts that do not come back unchanged from ``decode(encode(text))`` (expected: none)."""
    return [t for t in texts if tokenizer.decode(tokenizer(t, add_special_tokens=False)["input_ids"]) != t]
