"""Token rewards: ``r(y_t) = beta * (logp_oracle(y_t) - logp_ref(y_t))`` for every response token.

Raw per-token scores are computed once and saved with the dataset (columns ``chosen_scores`` and
``rejected_scores``, aligned with ``chosen_ids`` / ``rejected_ids``), under a cache key made of
everything that determines them: a hash of each model's weights, ``beta`` and a hash of the token
ids. Changing ``k`` or the selector never re-runs a model; changing a model, ``beta`` or the data
never reuses stale scores. Prompt tokens and padding are never scored.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, load_from_disk

from sepo.data import build_sequences, check_same_tokenizer, row_places
from sepo.errors import ConfigError, DataError
from sepo.logprobs import token_logps
from sepo.utils import add_column, progress, staged_dir, write_json

SCORE_COLUMNS = ("chosen_scores", "rejected_scores")
_FORMAT_VERSION = 1


def model_fingerprint(model) -> str:
    """Hash of a model's class, config and weights (what its log-probs depend on)."""
    h = hashlib.sha256(type(model).__name__.encode())
    h.update(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def ids_fingerprint(dataset: Dataset) -> str:
    """Hash of the token ids that scoring reads (prompt, chosen and rejected)."""
    h = hashlib.sha256()
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        values = dataset[column]
        h.update(np.asarray([len(v) for v in values], dtype=np.int64).tobytes())
        h.update(np.asarray([t for v in values for t in v], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so little padding is scored."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def token_rewards(
    oracle,
    reference,
    dataset: Dataset,
    *,
    beta: float = 0.1,
    batch_size: int = 16,
    pad_id: int = 0,
) -> dict[str, list[list[float]]]:
    """Per-token rewards of every chosen and rejected response of a tokenised dataset.

    Returns ``{"chosen_scores": [...], "rejected_scores": [...]}``, one list per row, aligned with the
    row's response ids. The LM heads run only at response positions.
    """
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ConfigError(f"beta = {beta!r}: must be a positive number")
    for model in (oracle, reference):
        model.eval()
    n = len(dataset)
    places = row_places(dataset)  # each row's line / row and prompt_id in the user's data, for errors
    prompts, chosen, rejected = dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"]
    lengths = [len(p) + max(len(c), len(r)) for p, c, r in zip(prompts, chosen, rejected)]
    out = {"chosen_scores": [None] * n, "rejected_scores": [None] * n}
    batches = length_sorted_batches(lengths, batch_size)
    for batch in progress(batches, desc="scoring tokens", total=len(batches)):
        seq_prompts = [prompts[i] for i in batch] * 2
        seq_responses = [chosen[i] for i in batch] + [rejected[i] for i in batch]
        enc = build_sequences(seq_prompts, seq_responses, pad_id)
        positions = enc["response_mask"]  # (2b, T-1)
        diff = token_logps(oracle, enc["input_ids"], enc["attention_mask"], positions) - token_logps(
            reference, enc["input_ids"], enc["attention_mask"], positions
        )
        rewards = beta * diff  # (2b, T-1)
        for j, i in enumerate(batch):
            for side, k in (("chosen_scores", j), ("rejected_scores", j + len(batch))):
                values = rewards[k][positions[k]]
                if not torch.isfinite(values).all():
                    t = int((~torch.isfinite(values)).nonzero()[0])
                    raise DataError(f"{places[i]}: {side}[{t}] is not finite (check the models' weights and inputs)")
                out[side][i] = values.tolist()
    return out


def scores_cache_key(oracle, reference, dataset: Dataset, beta: float) -> dict[str, str | float | int]:
    return {
        "oracle": model_fingerprint(oracle),
        "reference": model_fingerprint(reference),
        "data": ids_fingerprint(dataset),
        "beta": float(beta),
        "format": _FORMAT_VERSION,
    }


def _with_columns(dataset: Dataset, columns: dict[str, list]) -> Dataset:
    for name, values in columns.items():
        if name in dataset.column_names:
            dataset = dataset.remove_columns(name)
        dataset = add_column(dataset, name, values)
    return dataset


def score_dataset(
    dataset: Dataset,
    oracle,
    reference,
    *,
    beta: float = 0.1,
    batch_size: int = 16,
    cache_dir: str | Path | None = None,
    oracle_tokenizer=None,
    reference_tokenizer=None,
) -> Dataset:
    """The tokenised ``dataset`` with ``chosen_scores`` / ``rejected_scores`` added, cached on disk.

    With ``cache_dir``, scores are saved to ``cache_dir/<key>`` (written atomically, with a
    ``scores.json`` naming what made them) and reused only when oracle weights, reference weights,
    ``beta`` and token ids are all the same. When tokenizers are given they must be identical.
    """
    if oracle_tokenizer is not None and reference_tokenizer is not None:
        check_same_tokenizer(oracle_tokenizer, reference_tokenizer)
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        if column not in dataset.column_names:
            raise DataError(f"dataset has no column '{column}': tokenise it first (sepo.data.tokenize_preferences)")
    tokenizer = oracle_tokenizer or reference_tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
    key = scores_cache_key(oracle, reference, dataset, beta)
    target = None
    if cache_dir is not None:
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        target = Path(cache_dir) / name
        if (target / "scores.json").exists():  # the scores only: rows keep their own place (row, line, prompt_id)
            cached = load_from_disk(str(target / "dataset"))
            return _with_columns(dataset, {column: cached[column] for column in SCORE_COLUMNS})
    scores = token_rewards(oracle, reference, dataset, beta=beta, batch_size=batch_size, pad_id=pad_id)
    scored = _with_columns(dataset, scores)
    if target is not None:
        with staged_dir(target) as tmp:
            scored.save_to_disk(str(tmp / "dataset"))
            write_json(tmp / "scores.json", key)
        scored = load_from_disk(str(target / "dataset"))
    return scored
