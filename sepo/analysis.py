"""Token-reward analyses: how concentrated rewards are (C1) and how well they agree with gold credit (R1).

All functions take ragged per-response lists (one float per response token, as saved by
:mod:`sepo.scoring` and as carried from the gold judge's word credit) and return plain numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sepo import selectors
from sepo.stats import spearman


def top_share(values: Sequence[float], fraction: float) -> float:
    """Share of a response's total |value| held by its top ``fraction`` of tokens (by |value|).

    Uses the same count rule as selection (``max(1, floor(fraction * n))``). Uniform values give
    about ``fraction``; a response whose reward sits on one token gives 1. NaN if all are 0.
    """
    mags = np.sort(np.abs(np.asarray(values, dtype=float)))[::-1]
    total = mags.sum()
    if total == 0:
        return float("nan")
    count = min(len(mags), max(1, int(np.floor(fraction * len(mags) + 1e-6))))
    return float(mags[:count].sum() / total)


def concentration(responses: Sequence[Sequence[float]], fractions: Sequence[float] = (0.1, 0.3)) -> dict[str, float]:
    """Mean over responses of :func:`top_share` for each fraction (``top10``, ``top30``, ...)."""
    out = {}
    for f in fractions:
        shares = [top_share(v, f) for v in responses if len(v)]
        out[f"top{round(100 * f)}"] = float(np.nanmean(shares))
    return out


def rank_agreement(scores: Sequence[Sequence[float]], gold: Sequence[Sequence[float]], min_tokens: int = 3) -> float:
    """Mean per-response Spearman correlation between token scores and gold token credit.

    Responses shorter than ``min_tokens`` or with constant scores or credit are skipped.
    """
    rhos = []
    for s, g in zip(scores, gold):
        if len(s) >= min_tokens and np.std(s) > 0 and np.std(g) > 0:
            rhos.append(spearman(s, g))
    return float(np.mean(rhos)) if rhos else float("nan")


def _masks(values: Sequence[Sequence[float]], k: float, largest: bool):
    padded, valid = selectors.pad_ragged(values)
    return selectors.topk_select(padded, valid, k, largest=largest), valid


def selection_agreement(
    scores: Sequence[Sequence[float]],
    gold: Sequence[Sequence[float]],
    k: float,
    largest: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """How well a top-``k`` selection by ``scores`` matches the top-``k`` by gold credit.

    ``precision``: share of selected tokens that are in the gold top-``k`` (same count rule);
    ``random_precision``: the same for a random selection of equal counts (chance level);
    ``gold_mass``: share of the gold credit of the favoured sign (positive for a chosen response,
    ``largest``; negative for a rejected one) captured by the selection; ``random_gold_mass``: the
    same for the random selection.
    """
    picked, valid = _masks(scores, k, largest)
    gold_padded, _ = selectors.pad_ragged(gold)
    gold_top = selectors.topk_select(gold_padded, valid, k, largest=largest)
    counts = picked.sum(-1)
    rows = range(len(scores))
    random_pick = selectors.random_select(valid, counts, [seed * 1_000_003 + r for r in rows])
    signed = (gold_padded if largest else -gold_padded).clamp(min=0) * valid
    total_mass = signed.sum(-1)

    def precision(mask):
        return float(((mask & gold_top).sum(-1).float() / counts.clamp(min=1).float()).mean())

    def mass(mask):
        keep = total_mass > 0
        if not keep.any():
            return float("nan")
        return float(((signed * mask).sum(-1)[keep] / total_mass[keep]).mean())

    return {
        "precision": precision(picked),
        "random_precision": precision(random_pick),
        "gold_mass": mass(picked),
        "random_gold_mass": mass(random_pick),
    }
