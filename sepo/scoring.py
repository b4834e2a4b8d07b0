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
from sepo.utils import add_column, column, progress, staged_dir, write_json

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
    for name in ("prompt_ids", "chosen_ids", "rejected_ids"):
        values = column(dataset, name)
        h.update(np.asarray([len(v) for v in values], dtype=np.int64).tobytes())
        h.update(np.asarray([t for v in values for t in v], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so little padding is scored."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def response_logps(model, dataset: Dataset, *, batch_size: int = 16, pad_id: int = 0,
                   logps=None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-token log-probs of every chosen and rejected response of a tokenised dataset under ``model``.

    Returns two lists (chosen, rejected) of one float32 tensor per row, aligned with the row's response
    ids. Rows go in batches of similar length (:func:`length_sorted_batches`); a row's chosen and rejected
    response share a batch. ``logps(input_ids, attention_mask, positions)`` computes a batch's (B, T-1)
    log-probs (default :func:`sepo.logprobs.token_logps` of ``model``: the LM head only at response
    positions). The same rows in the same batches give the same values, whatever else runs.
    """
    logps = logps or (lambda ids, mask, positions: token_logps(model, ids, mask, positions))
    n = len(dataset)
    prompts, chosen, rejected = (column(dataset, name) for name in ("prompt_ids", "chosen_ids", "rejected_ids"))
    lengths = [len(p) + max(len(c), len(r)) for p, c, r in zip(prompts, chosen, rejected)]
    out: tuple[list, list] = ([None] * n, [None] * n)
    batches = length_sorted_batches(lengths, batch_size)
    for batch in progress(batches, desc="log-probs", total=len(batches)):
        enc = build_sequences([prompts[i] for i in batch] * 2, [chosen[i] for i in batch] + [rejected[i] for i in batch],
                              pad_id)
        positions = enc["response_mask"]  # (2b, T-1)
        values = logps(enc["input_ids"], enc["attention_mask"], positions)  # (2b, T-1)
        for j, i in enumerate(batch):
            out[0][i] = values[j][positions[j]].float()
            out[1][i] = values[j + len(batch)][positions[j + len(batch)]].float()
    return out


def cached_response_logps(model, dataset: Dataset, *, batch_size: int, pad_id: int, cache_dir: str | Path | None,
                          via: str = "token_logps", logps=None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """:func:`response_logps`, read from ``cache_dir/<key>`` when a run with the same key made them.

    The key hashes the model's weights (:func:`model_fingerprint`), the token ids, the batching
    (``batch_size``, ``pad_id``: batches decide float rounding), ``via`` (which function computed
    them) and the code and numerics that compute them (:func:`sepo.cache.code_fingerprint`), so a
    cached value is exactly what this call would compute. ``cache_dir=None`` computes without caching.
    """
    if cache_dir is None:
        return response_logps(model, dataset, batch_size=batch_size, pad_id=pad_id, logps=logps)
    from sepo.cache import code_fingerprint, exclusive

    key = {"model": model_fingerprint(model), "data": ids_fingerprint(dataset), "batch_size": int(batch_size),
           "pad_id": int(pad_id), "via": via, "code": code_fingerprint("response_logps")}
    target = Path(cache_dir) / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    with exclusive(Path(cache_dir) / ".locks" / f"{target.name}.lock"):
        if not (target / "logps.json").exists():
            chosen, rejected = response_logps(model, dataset, batch_size=batch_size, pad_id=pad_id, logps=logps)
            with staged_dir(target) as tmp:
                np.savez(tmp / "logps.npz", **_ragged_to_flat("chosen", chosen), **_ragged_to_flat("rejected", rejected))
                write_json(tmp / "logps.json", key)
    with np.load(target / "logps.npz") as stored:
        return _flat_to_ragged(stored, "chosen"), _flat_to_ragged(stored, "rejected")


def _ragged_to_flat(name: str, rows: list[torch.Tensor]) -> dict[str, np.ndarray]:
    """One float32 array of every row's values and the rows' end offsets (how ragged rows are stored)."""
    values = torch.cat(rows).numpy() if rows else np.zeros(0, dtype=np.float32)
    return {f"{name}_values": values.astype(np.float32, copy=False),
            f"{name}_ends": np.cumsum([len(v) for v in rows], dtype=np.int64)}


def _flat_to_ragged(stored, name: str) -> list[torch.Tensor]:
    """The rows :func:`_ragged_to_flat` stored, as float32 tensors (views of one array)."""
    values = torch.from_numpy(stored[f"{name}_values"])
    ends = stored[f"{name}_ends"].tolist()
    return list(torch.tensor_split(values, ends[:-1])) if ends else []


def token_rewards(
    oracle,
    reference,
    dataset: Dataset,
    *,
    beta: float = 0.1,
    batch_size: int = 16,
    pad_id: int = 0,
    reference_cache_dir: str | Path | None = None,
) -> dict[str, list[list[float]]]:
    """Per-token rewards of every chosen and rejected response of a tokenised dataset.

    Returns ``{"chosen_scores": [...], "rejected_scores": [...]}``, one list per row, aligned with the
    row's response ids. The LM heads run only at response positions. The reference's log-probs do not
    depend on the oracle: with ``reference_cache_dir`` they are computed once per reference and data
    (:func:`cached_response_logps`) and shared by every oracle scored against them.
    """
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ConfigError(f"beta = {beta!r}: must be a positive number")
    for model in (oracle, reference):
        model.eval()
    places = row_places(dataset)  # each row's line / row and prompt_id in the user's data, for errors
    oracle_logps = response_logps(oracle, dataset, batch_size=batch_size, pad_id=pad_id)
    reference_logps = cached_response_logps(reference, dataset, batch_size=batch_size, pad_id=pad_id,
                                            cache_dir=reference_cache_dir)
    out: dict[str, list] = {}
    for side, ours, theirs in (("chosen_scores", oracle_logps[0], reference_logps[0]),
                               ("rejected_scores", oracle_logps[1], reference_logps[1])):
        out[side] = []
        for i, (o, r) in enumerate(zip(ours, theirs)):
            values = beta * (o - r)
            if not torch.isfinite(values).all():
                t = int((~torch.isfinite(values)).nonzero()[0])
                raise DataError(f"{places[i]}: {side}[{t}] is not finite (check the models' weights and inputs)")
            out[side].append(values.tolist())
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
    reference_cache_dir: str | Path | None = None,
) -> Dataset:
    """The tokenised ``dataset`` with ``chosen_scores`` / ``rejected_scores`` added, cached on disk.

    With ``cache_dir``, scores are saved to ``cache_dir/<key>`` (written atomically, with a
    ``scores.json`` naming what made them) and reused only when oracle weights, reference weights,
    ``beta`` and token ids are all the same. When tokenizers are given they must be identical.
    ``reference_cache_dir``: where the reference's log-probs are kept for other oracles (:func:`token_rewards`).
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
    scores = token_rewards(oracle, reference, dataset, beta=beta, batch_size=batch_size, pad_id=pad_id,
                           reference_cache_dir=reference_cache_dir)
    scored = _with_columns(dataset, scores)
    if target is not None:
        with staged_dir(target) as tmp:
            scored.save_to_disk(str(tmp / "dataset"))
            write_json(tmp / "scores.json", key)
        scored = load_from_disk(str(target / "dataset"))
    return scored
