"""Sampling responses from any causal LM: batched ``model.generate`` with left padding.

Prompts are encoded exactly as training and scoring encode them (:func:`sepo.data.tokenize_prompt`,
so with the tokenizer's BOS), left-padded into batches (so every prompt ends where generation
starts), and sampled until EOS or ``max_new_tokens``. The returned text is the decoded response
alone, without EOS or padding, ready to be re-tokenised by :func:`sepo.data.tokenize_response`.

Samples are deterministic for a seed: the generator is seeded once per call (inside
``torch.random.fork_rng``, so the caller's random state is untouched) and batches are drawn in a
fixed order. The same prompts, seed and ``batch_size`` give the same samples.

The key/value cache lives in buffers allocated once per batch (:class:`PreallocatedCache`) instead of
``DynamicCache``'s ``torch.cat`` of the whole cache at every token and layer; attention reads the same
values, so the samples are token for token those of ``model.generate`` with its default cache
(``tests/test_generation.py`` checks it).

Each token is drawn by inverse-CDF sampling (:class:`InverseCdfSampling`), one uniform number per
sequence, instead of ``torch.multinomial``, which draws one exponential number per vocabulary entry (a
quarter of a decoding step of the mini world's models on a CPU). Both draw from the same distribution;
the random stream differs, so the samples differ from ``model.generate``'s own ``do_sample=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TopPLogitsWarper
from transformers.cache_utils import DynamicCache, DynamicLayer

from sepo.data import tokenize_prompts
from sepo.errors import ConfigError
from sepo.utils import progress


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ``input_ids`` and ``attention_mask`` with the padding on the left."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        input_ids[i, width - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
        attention_mask[i, width - len(s):] = 1
    return input_ids, attention_mask


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views of buffers holding ``capacity`` positions.

    ``update`` writes the new positions into the buffers (growing them by doubling if ever needed)
    instead of concatenating the whole cache, and returns views of the filled part: the same values
    ``DynamicLayer`` returns. Any other change of the cache (``crop``, beam reordering) goes through
    ``DynamicLayer`` and the next ``update`` copies the result into new buffers.
    """

    def __init__(self, capacity: int = 0):
        super().__init__()
        self.capacity = capacity
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        if self._buffers is None or self._buffers[0].shape[-2] < length + key_states.shape[-2] \
                or self.keys.data_ptr() != self._buffers[0].data_ptr():
            self._buffers = self._allocate(key_states, value_states, length)
        end = length + key_states.shape[-2]
        keys, values = self._buffers
        keys[..., length:end, :] = key_states
        values[..., length:end, :] = value_states
        self.keys, self.values = keys[..., :end, :], values[..., :end, :]
        return self.keys, self.values

    def _allocate(self, key_states: torch.Tensor, value_states: torch.Tensor, length: int):
        """Buffers for at least ``capacity`` positions holding the ``length`` cached ones."""
        need = length + key_states.shape[-2]
        size = max(self.capacity, need, 2 * (self._buffers[0].shape[-2] if self._buffers is not None else 0))
        out = []
        for new, old in ((key_states, self.keys), (value_states, self.values)):
            buffer = new.new_empty((*new.shape[:-2], size, new.shape[-1]))
            if length:
                buffer[..., :length, :] = old
            out.append(buffer)
        return tuple(out)

    def reset(self) -> None:
        self._buffers = None
        super().reset()


def preallocated_cache(capacity: int) -> DynamicCache:
    """A ``DynamicCache`` of :class:`PreallocatedLayer` (one per model layer, made lazily) for ``capacity`` positions."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = lambda: PreallocatedLayer(capacity)
    return cache


def cache_for(model, capacity: int) -> dict:
    """``past_key_values`` for ``generate``: a :func:`preallocated_cache` when every layer is full attention,
    else nothing (sliding-window, linear-attention or encoder-decoder models keep the cache ``generate`` picks)."""
    config = model.config.get_text_config(decoder=True)
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    if model.config.is_encoder_decoder or any(t != "full_attention" for t in layer_types) \
            or getattr(config, "sliding_window", None):
        return {}
    return {"past_key_values": preallocated_cache(capacity)}


class InverseCdfSampling(LogitsProcessor):
    """Draw the next token of every sequence, as the last logits processor of greedy ``generate``.

    The scores (after ``generate``'s own processors, e.g. ``min_new_tokens``) are divided by
    ``temperature``, cut to the top-``top_p`` nucleus when ``top_p < 1``, and turned into probabilities
    ``p``; with one uniform number ``u`` in (0, 1] per sequence the token is the first ``i`` with
    ``sum_{j<=i} p_j >= u``: each token ``i`` is drawn with probability ``p_i``, a token of probability 0
    never. The scores returned are 0 at the drawn token and -inf elsewhere, so greedy decoding's argmax
    takes it. Numbers come from torch's global generator (seed it for repeatable draws).
    """

    def __init__(self, temperature: float = 1.0, top_p: float = 1.0):
        if not temperature > 0:
            raise ConfigError(f"temperature = {temperature}: sampling needs a temperature > 0")
        self.temperature = temperature
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1.0 else None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores / self.temperature if self.temperature != 1.0 else scores  # (B, V)
        if self.top_p is not None:
            scores = self.top_p(input_ids, scores)
        cdf = scores.softmax(-1).cumsum(-1)  # (B, V)
        u = (1.0 - torch.rand(cdf.shape[0], 1, dtype=cdf.dtype, device=cdf.device)) * cdf[:, -1:]  # (B, 1), in (0, total]
        drawn = torch.searchsorted(cdf, u).clamp_(max=cdf.shape[-1] - 1)  # (B, 1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, drawn, 0.0)


def strip_after_eos(ids: Sequence[int], eos_id: int) -> list[int]:
    """The tokens before the first EOS (all of them if none was sampled)."""
    ids = list(ids)
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


@torch.inference_mode()
def sample_responses(model, tokenizer, prompts: Sequence, *, num_samples: int = 1, max_new_tokens: int = 64,
                     temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 32,
                     min_new_tokens: int = 0) -> list[list[str]]:
    """``num_samples`` responses for each prompt: a list (one per prompt) of lists of strings.

    ``temperature = 0`` decodes greedily (then every sample of a prompt is the same). Prompts are
    strings or message lists (rendered by the chat template, as in :func:`sepo.data.tokenize_prompt`).
    ``min_new_tokens`` forbids EOS before that many tokens.
    """
    if num_samples < 1:
        raise ConfigError(f"num_samples = {num_samples}: must be >= 1")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens = {max_new_tokens}: must be >= 1 (a response cannot be empty)")
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise ConfigError(f"min_new_tokens = {min_new_tokens}: must be in [0, max_new_tokens = {max_new_tokens}]")
    if temperature < 0:
        raise ConfigError(f"temperature = {temperature}: must be >= 0")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p = {top_p}: must be in (0, 1]")
    if batch_size < 1:
        raise ConfigError(f"batch_size = {batch_size}: must be >= 1")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ConfigError("the tokenizer has no eos_token; generation could never stop")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    # greedy decoding; with a temperature, InverseCdfSampling draws each token (samples of a prompt: adjacent rows)
    sampling = {"logits_processor": LogitsProcessorList([InverseCdfSampling(temperature, top_p)])} if temperature > 0 else {}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[list[str]] = []
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed)
        starts = range(0, len(prompts), batch_size)
        for start in progress(starts, desc="sampling", total=len(starts)):
            encoded = tokenize_prompts(tokenizer, prompts[start : start + batch_size])
            input_ids, attention_mask = left_pad([ids for ids in encoded for _ in range(num_samples if sampling else 1)],
                                                 pad_id)  # (B * num_samples, T) when sampling
            generated = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                **cache_for(model, input_ids.shape[1] + max_new_tokens),
                max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None, do_sample=False,
                eos_token_id=eos_id, pad_token_id=pad_id, **sampling,
            )  # (B * num_samples, T + new) when sampling, (B, T + new) greedy
            if not sampling:
                generated = generated.repeat_interleave(num_samples, dim=0)
            new_tokens = generated[:, input_ids.shape[1]:].tolist()
            texts = [tokenizer.decode(strip_after_eos(ids, eos_id), skip_special_tokens=True) for ids in new_tokens]
            out.extend(texts[i : i + num_samples] for i in range(0, len(texts), num_samples))
    model.train(was_training)
    return out
