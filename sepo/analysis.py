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


# --------------------------------------------------------------------------------------------
# Analyses of a scored dataset (an oracle run's ``scored/``) against the world's gold credit
# --------------------------------------------------------------------------------------------
def gold_token_credit(scored, side: str) -> list[list[float]]:
    """Gold credit of every response token of a scored dataset (the judge's word credit carried by offsets)."""
    from sepo.world.judge import credit_to_tokens

    return [credit_to_tokens(c, o) for c, o in zip(scored[f"{side}_credit"], scored[f"{side}_offsets"])]


def token_agreement(scored, k: float = 0.3, seed: int = 0,
                    score_columns: tuple[str, str] = ("chosen_scores", "rejected_scores")) -> dict[str, float]:
    """Oracle token rewards against gold credit, per side: :func:`concentration` of both (C1),
    :func:`rank_agreement` (``spearman``) and :func:`selection_agreement` at ``k`` (R1)."""
    out: dict[str, float] = {}
    for side, column, largest in (("chosen", score_columns[0], True), ("rejected", score_columns[1], False)):
        scores, gold = scored[column], gold_token_credit(scored, side)
        for name, value in concentration(scores).items():
            out[f"{side}/oracle_{name}"] = value
        for name, value in concentration(gold).items():
            out[f"{side}/gold_{name}"] = value
        out[f"{side}/spearman"] = rank_agreement(scores, gold)
        for name, value in selection_agreement(scores, gold, k, largest=largest, seed=seed).items():
            out[f"{side}/{name}"] = value
    return out


# the selection of each arm of the main table, by selector (notebook 04's SePO, SePO-noEOS, SePO-gold, SePO-random)
SELECTION_ARMS = {"SePO": "topk", "SePO-noEOS": "noEOS", "SePO-gold": "gold", "SePO-random": "random"}


def arm_selection(scored, selector: str = "topk", k: float = 0.3, seed: int = 0, eos_id: int | None = None):
    """Masks of a registered ``selector`` at ``k_w = k_l = k`` over a scored mini-world dataset (ids and gold
    credit passed to selectors that need them; ``seed`` for random choices and ties)."""
    credit = (gold_token_credit(scored, "chosen"), gold_token_credit(scored, "rejected"))
    return selectors.select_from_scores(scored["chosen_scores"], scored["rejected_scores"], selector, seed=seed,
                                        ids=(scored["chosen_ids"], scored["rejected_ids"]), eos_id=eos_id, credit=credit,
                                        k_w=k, k_l=k)


def selected_tokens(scored, tokenizer, k: float = 0.3, top: int = 10, selector: str = "topk", seed: int = 0):
    """Which tokens a selection keeps most often, per side, against how common they are (default: SePO's
    top-k of the chosen and bottom-k of the rejected response by oracle reward).

    One row per (side, token) among the ``top`` most selected: ``selected`` (count), ``share_of_selection``,
    ``share_of_tokens`` (its base rate among all response tokens of that side) and ``mean_gold_credit`` of
    its selected occurrences. A selection dominated by punctuation, EOS or function words shows here.
    """
    from collections import Counter, defaultdict

    import pandas as pd

    chosen, rejected = arm_selection(scored, selector, k, seed, tokenizer.eos_token_id)
    rows = []
    for side, selections in (("chosen", chosen), ("rejected", rejected)):
        picked, seen, credit = Counter(), Counter(), defaultdict(float)
        for ids, mask, gold in zip(scored[f"{side}_ids"], selections, gold_token_credit(scored, side)):
            seen.update(ids)
            for token, keep, g in zip(ids, mask, gold):
                if keep:
                    picked[token] += 1
                    credit[token] += g
        n_picked, n_seen = sum(picked.values()), sum(seen.values())
        for token, count in picked.most_common(top):
            rows.append({"side": side, "token": repr(tokenizer.decode([token])), "selected": count,
                         "share_of_selection": count / n_picked, "share_of_tokens": seen[token] / n_seen,
                         "mean_gold_credit": credit[token] / count})
    return pd.DataFrame(rows)


def selection_profile(scored, tokenizer, k: float = 0.3, seed: int = 0, arms: dict[str, str] | None = None):
    """What each arm's selection holds, per side: ``eos_share`` (EOS among the selected tokens),
    ``credited_share`` (selected tokens with non-zero gold credit), ``mean_gold_credit`` of the selected tokens
    (chosen: higher is better; rejected: lower is better), and the three most selected tokens."""
    import numpy as np
    import pandas as pd

    eos_id = tokenizer.eos_token_id
    rows = []
    for arm, selector in (arms or SELECTION_ARMS).items():
        masks = dict(zip(("chosen", "rejected"), arm_selection(scored, selector, k, seed, eos_id)))
        top = selected_tokens(scored, tokenizer, k=k, top=3, selector=selector, seed=seed)
        for side in ("chosen", "rejected"):
            ids = [i for row, mask in zip(scored[f"{side}_ids"], masks[side]) for i, keep in zip(row, mask) if keep]
            gold = [g for row, mask in zip(gold_token_credit(scored, side), masks[side]) for g, keep in zip(row, mask) if keep]
            rows.append({"arm": arm, "selector": selector, "side": side, "selected": len(ids),
                         "eos_share": float(np.mean([i == eos_id for i in ids])),
                         "credited_share": float(np.mean([g != 0 for g in gold])),
                         "mean_gold_credit": float(np.mean(gold)),
                         "top_tokens": " ".join(top[top.side == side].token)})
    return pd.DataFrame(rows)
