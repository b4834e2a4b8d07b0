"""Token selectors: boolean masks over response tokens, derived from raw per-token scores.

Every selector takes padded tensors aligned with response tokens: ``scores`` (B, R) float and
``valid`` (B, R) bool (true for the response's real tokens, false for padding), and returns a
(B, R) bool mask that is false wherever ``valid`` is. Selectors never run a model: SePO's masks
come from scores saved once by :mod:`sepo.scoring`, so changing ``k`` re-runs nothing.

Ties are broken deterministically: among equal scores the earlier token wins.

**Counts.** A per-response selector keeps ``floor(k * n)`` of a response's ``n`` tokens (the
paper's ``int(k * n)``; a tiny tolerance absorbs float error so ``0.3 * 10`` keeps 3). When that is
0 (a short response or a small ``k``) the response keeps **one** token, its most extreme one, so
that every pair still carries a signal; this is what ``min_tokens=1`` (the default) does, and
``min_tokens=0`` gives the literal ``int(k * n)`` (such a response then contributes 0 to the SePO
loss, see :func:`sepo.losses.masked_mean`).

**Registry.** The offline selectors a policy can train on are registered in :data:`SELECTORS`
(``topk``: SePO's per-response top/bottom k; ``threshold``; ``adaptive``; the controls ``random``,
``noEOS`` and ``gold``), each a function
``fn(pairs: ScoredPairs, **hyperparameters) -> (chosen_mask, rejected_mask)`` whose keyword defaults
are its hyper-parameters, as losses are in :data:`sepo.losses.LOSSES`. One name per idea: ``k_w`` /
``k_l`` are the fractions of a chosen / rejected response's tokens kept, ``mass`` the fraction of a
response's reward mass kept.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence

import torch

from sepo.errors import ConfigError, DataError

_EPS = 1e-6


def check_fraction(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 < value <= 1.0) or math.isnan(value):
        raise ConfigError(f"{name} = {value!r}: must be a fraction in (0, 1]")


def check_scores(scores: torch.Tensor, valid: torch.Tensor, name: str = "scores", rows: Sequence[int] | None = None) -> None:
    """Raise :class:`DataError` naming the first row whose valid scores hold NaN or inf."""
    if scores.shape != valid.shape:
        raise DataError(f"{name}: shape {tuple(scores.shape)} does not match its mask {tuple(valid.shape)}")
    bad = (~torch.isfinite(scores)) & valid
    if bad.any():
        i, t = (int(x) for x in bad.nonzero()[0])
        row = rows[i] if rows is not None else i
        raise DataError(f"row {row}: {name}[{t}] = {scores[i, t].item()} is not finite")


def pad_ragged(values: Sequence[Sequence[float]], fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged per-response lists -> (scores (B, R) float32, valid (B, R) bool)."""
    width = max((len(v) for v in values), default=0)
    scores = torch.full((len(values), width), fill, dtype=torch.float32)
    valid = torch.zeros((len(values), width), dtype=torch.bool)
    for i, v in enumerate(values):
        if len(v):
            scores[i, : len(v)] = torch.as_tensor(v, dtype=torch.float32)
            valid[i, : len(v)] = True
    return scores, valid


def unpad(mask: torch.Tensor, valid: torch.Tensor) -> list[list[bool]]:
    """(B, R) mask -> ragged per-response lists (the inverse of :func:`pad_ragged`)."""
    return [m[v].tolist() for m, v in zip(mask, valid)]


def rank_within_rows(scores: torch.Tensor, valid: torch.Tensor, largest: bool) -> torch.Tensor:
    """Rank (0 = best) of each valid token in its row; padding ranks last. Ties: earlier token first."""
    fill = float("-inf") if largest else float("inf")
    key = scores.masked_fill(~valid, fill)
    order = torch.sort(key, dim=-1, descending=largest, stable=True).indices  # (B, R)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return ranks


def topk_counts(valid: torch.Tensor, k: float, min_tokens: int = 1) -> torch.Tensor:
    """Per-row count ``max(min_tokens, floor(k * n))`` (never more than ``n``)."""
    check_fraction(k, "k")
    n = valid.sum(-1)  # (B,)
    counts = torch.floor(n.double() * k + _EPS).long()
    return torch.minimum(torch.clamp(counts, min=min_tokens), n)


def topk_select(scores: torch.Tensor, valid: torch.Tensor, k: float, largest: bool = True, min_tokens: int = 1) -> torch.Tensor:
    """Per response, the ``floor(k * n)`` highest (``largest``) or lowest tokens."""
    counts = topk_counts(valid, k, min_tokens)
    return (rank_within_rows(scores, valid, largest) < counts[:, None]) & valid


def sepo_select(
    chosen_scores: torch.Tensor,
    chosen_valid: torch.Tensor,
    rejected_scores: torch.Tensor,
    rejected_valid: torch.Tensor,
    k_w: float = 0.3,
    k_l: float | None = None,
    min_tokens: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SePO: the top ``k_w`` tokens of each chosen response, the bottom ``k_l`` of each rejected one."""
    k_l = k_w if k_l is None else k_l
    return (
        topk_select(chosen_scores, chosen_valid, k_w, largest=True, min_tokens=min_tokens),
        topk_select(rejected_scores, rejected_valid, k_l, largest=False, min_tokens=min_tokens),
    )


def dataset_threshold(scores: torch.Tensor, valid: torch.Tensor, k: float, largest: bool = True) -> float:
    """One cut over all tokens of a dataset: the score of the ``floor(k * N)``-th best of its N tokens."""
    check_fraction(k, "k")
    flat = scores[valid]
    if flat.numel() == 0:
        raise DataError("dataset_threshold: no valid token to threshold")
    count = max(1, math.floor(flat.numel() * k + _EPS))
    ordered = torch.sort(flat, descending=largest, stable=True).values
    return float(ordered[count - 1])


def threshold_select(scores: torch.Tensor, valid: torch.Tensor, threshold: float, largest: bool = True) -> torch.Tensor:
    """Tokens at or beyond a dataset-level cut (``>=`` for the chosen side, ``<=`` for the rejected)."""
    picked = scores >= threshold if largest else scores <= threshold
    return picked & valid


def adaptive_select(scores: torch.Tensor, valid: torch.Tensor, mass: float, largest: bool = True) -> torch.Tensor:
    """Smallest set of tokens holding a fraction ``mass`` of the response's reward mass of one sign.

    For a chosen response (``largest``) the mass is ``sum(max(r, 0))``; tokens are taken in order
    of decreasing reward until their positive parts reach ``mass`` of it. For a rejected response the
    same holds for ``max(-r, 0)`` in order of increasing reward. A response with no mass of that
    sign keeps its single most extreme token (as :func:`topk_select` with ``min_tokens=1``). The
    count thus adapts to how concentrated each response's reward is, with no ``k`` to choose.
    """
    check_fraction(mass, "mass")
    signed = scores if largest else -scores
    token_mass = signed.clamp(min=0).masked_fill(~valid, 0.0)  # (B, R)
    ranks = rank_within_rows(scores, valid, largest)
    sorted_mass = torch.zeros_like(token_mass).scatter_(-1, ranks, token_mass)  # mass in rank order
    cumulative = sorted_mass.cumsum(-1)
    total = cumulative[:, -1:] if cumulative.shape[-1] else cumulative
    # the first rank at which the cumulative mass reaches mass * total, counted inclusively
    reached = cumulative >= (mass * total - _EPS * total.abs())
    counts = torch.where(reached.any(-1), reached.float().argmax(-1) + 1, torch.ones_like(total[:, 0], dtype=torch.long))
    counts = torch.where(total[:, 0] > 0, counts, torch.ones_like(counts))
    counts = torch.minimum(counts, valid.sum(-1))
    return (ranks < counts[:, None]) & valid


def random_select(valid: torch.Tensor, counts: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
    """Control: ``counts[i]`` tokens of response ``i`` drawn uniformly, seeded per response.

    One seed per row (e.g. ``base_seed * 1_000_003 + row_index``) makes the draw independent of
    batching and order.
    """
    mask = torch.zeros_like(valid)
    for i, seed in enumerate(seeds):
        n = int(valid[i].sum())
        g = torch.Generator().manual_seed(int(seed))
        picked = torch.randperm(n, generator=g)[: int(counts[i])]
        positions = valid[i].nonzero().squeeze(-1)[picked]
        mask[i, positions] = True
    return mask


def quantile_select(scores: torch.Tensor, valid: torch.Tensor, q: float = 0.6) -> torch.Tensor:
    """Tokens whose score is ``>=`` the ``q``-quantile (linear interpolation) of their response's scores."""
    if not 0.0 <= q < 1.0:
        raise ConfigError(f"quantile = {q!r}: must be in [0, 1) (keep a fraction k = 1 - q in (0, 1])")
    nan_padded = scores.detach().float().masked_fill(~valid, float("nan"))
    cut = torch.nanquantile(nan_padded, q, dim=-1, keepdim=True)  # (B, 1); NaN for an empty row
    return (scores.detach() >= cut) & valid


def selective_dpo_scores(policy_logps: torch.Tensor, ref_logps: torch.Tensor, chosen: bool) -> torch.Tensor:
    """Selective-DPO's online token score: chosen ``logp_ref - logp_policy``, rejected the opposite."""
    diff = ref_logps.detach() - policy_logps.detach()
    return diff if chosen else -diff


def confpo_select(policy_logps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """ConfPO's rule: tokens whose policy probability is below the response's mean probability."""
    probs = policy_logps.detach().exp().masked_fill(~valid, 0.0)
    mean = probs.sum(-1, keepdim=True) / valid.sum(-1, keepdim=True).clamp(min=1)
    # a relative tolerance keeps float error from selecting tokens exactly at the mean
    return (probs < mean * (1 - _EPS)) & valid


def selected_token_ids(response_ids: Sequence[int], mask: Sequence[bool]) -> list[int]:
    """Token ids picked by a per-response mask (to check them against the tokens that were scored)."""
    if len(response_ids) != len(mask):
        raise DataError(f"mask has {len(mask)} entries for a response of {len(response_ids)} tokens")
    return [t for t, m in zip(response_ids, mask) if m]


# --------------------------------------------------------------------------------------------
# Registry of offline selectors (what a SePO-style policy trains on), shaped like the loss registry
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ScoredPairs:
    """Padded token scores (B, R) and validity masks (B, R) of a batch of scored pairs.

    ``rows`` names each pair in error messages and seeds per-row draws; ``seed`` is the run's
    selection seed (only selectors that draw at random read it); ``chosen_credit`` /
    ``rejected_credit`` hold a world's gold per-token credit where one exists.
    """

    chosen_scores: torch.Tensor
    chosen_valid: torch.Tensor
    rejected_scores: torch.Tensor
    rejected_valid: torch.Tensor
    rows: list[int]
    seed: int = 0
    chosen_ids: torch.Tensor | None = None  # (B, R) token ids, for selectors that need them ("ids")
    rejected_ids: torch.Tensor | None = None
    eos_id: int | None = None
    chosen_credit: torch.Tensor | None = None  # (B, R) gold per-token credit, for selectors that need it ("credit")
    rejected_credit: torch.Tensor | None = None


@dataclasses.dataclass(frozen=True)
class SelectorSpec:
    """A registered selector: ``fn(pairs: ScoredPairs, **hyperparameters) -> (chosen_mask, rejected_mask)``."""

    name: str
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    doc: str
    needs: tuple[str, ...] = ()  # "ids" (token ids and the EOS id), "credit" (gold per-token credit)

    @property
    def hyperparameters(self) -> dict[str, object]:
        params = list(inspect.signature(self.fn).parameters.values())[1:]
        return {p.name: p.default for p in params}

    def check(self, hyperparameters: dict) -> None:
        """Raise :class:`ConfigError` for a hyper-parameter this selector does not take, or a bad fraction."""
        unknown = sorted(set(hyperparameters) - set(self.hyperparameters))
        if unknown:
            raise ConfigError(f"selector {self.name!r} takes {sorted(self.hyperparameters)}, not {unknown}")
        for name, value in hyperparameters.items():
            if name in FRACTIONS:
                check_fraction(value, name)

    def __call__(self, pairs: ScoredPairs, **hyperparameters) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(hyperparameters)
        return self.fn(pairs, **hyperparameters)


SELECTORS: dict[str, SelectorSpec] = {}
FRACTIONS = ("k_w", "k_l", "mass")  # hyper-parameters that are fractions in (0, 1]


def register_selector(name: str, needs: tuple[str, ...] = ()):
    """Register a selector under ``name``; ``needs`` names what it reads beyond the scores: ``"ids"``
    (token ids and the EOS id) or ``"credit"`` (a world's gold per-token credit)."""

    def wrap(fn):
        SELECTORS[name] = SelectorSpec(name, fn, (fn.__doc__ or "").strip(), tuple(needs))
        return fn

    return wrap


def get_selector(name: str) -> SelectorSpec:
    if name not in SELECTORS:
        raise ConfigError(f"unknown selector {name!r}; registered: {sorted(SELECTORS)}")
    return SELECTORS[name]


@register_selector("topk")
def topk_selector(pairs: ScoredPairs, k_w: float = 0.3, k_l: float = 0.3, min_tokens: int = 1):
    """SePO: per response, the top ``k_w`` tokens of the chosen and the bottom ``k_l`` of the rejected."""
    return sepo_select(pairs.chosen_scores, pairs.chosen_valid, pairs.rejected_scores, pairs.rejected_valid, k_w, k_l,
                       min_tokens)


@register_selector("threshold")
def threshold_selector(pairs: ScoredPairs, k_w: float = 0.3, k_l: float = 0.3):
    """One dataset-level cut per side, keeping a fraction ``k_w`` / ``k_l`` of all chosen / rejected tokens."""
    cs, cv, rs, rv = pairs.chosen_scores, pairs.chosen_valid, pairs.rejected_scores, pairs.rejected_valid
    return (threshold_select(cs, cv, dataset_threshold(cs, cv, k_w, largest=True), largest=True),
            threshold_select(rs, rv, dataset_threshold(rs, rv, k_l, largest=False), largest=False))


@register_selector("adaptive")
def adaptive_selector(pairs: ScoredPairs, mass: float = 0.5):
    """Per response, the fewest tokens holding a fraction ``mass`` of its reward mass of one sign (no k)."""
    return (adaptive_select(pairs.chosen_scores, pairs.chosen_valid, mass, largest=True),
            adaptive_select(pairs.rejected_scores, pairs.rejected_valid, mass, largest=False))


@register_selector("random")
def random_selector(pairs: ScoredPairs, k_w: float = 0.3, k_l: float = 0.3, min_tokens: int = 1):
    """Control: as many tokens as ``topk`` keeps, drawn uniformly (seeded by the run's seed and the row)."""
    rows, seed = pairs.rows, pairs.seed
    return (random_select(pairs.chosen_valid, topk_counts(pairs.chosen_valid, k_w, min_tokens),
                          [seed * 1_000_003 + 2 * r for r in rows]),
            random_select(pairs.rejected_valid, topk_counts(pairs.rejected_valid, k_l, min_tokens),
                          [seed * 1_000_003 + 2 * r + 1 for r in rows]))


@register_selector("noEOS", needs=("ids",))
def no_eos_selector(pairs: ScoredPairs, k_w: float = 0.3, k_l: float = 0.3, min_tokens: int = 1):
    """Diagnostic: ``topk`` among a response's tokens other than EOS (EOS is never selected, on either side)."""
    chosen_valid = pairs.chosen_valid & (pairs.chosen_ids != pairs.eos_id)
    rejected_valid = pairs.rejected_valid & (pairs.rejected_ids != pairs.eos_id)
    return sepo_select(pairs.chosen_scores, chosen_valid, pairs.rejected_scores, rejected_valid, k_w, k_l, min_tokens)


def _topk_random_ties(scores: torch.Tensor, valid: torch.Tensor, k: float, largest: bool, seeds: Sequence[int],
                      min_tokens: int) -> torch.Tensor:
    """:func:`topk_select` with ties broken at random (one seeded permutation of positions per row)."""
    if scores.shape[0] == 0:
        return torch.zeros_like(valid)
    perm = torch.stack([torch.randperm(scores.shape[1], generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    picked = topk_select(scores.gather(1, perm), valid.gather(1, perm), k, largest=largest, min_tokens=min_tokens)
    return torch.zeros_like(picked).scatter_(1, perm, picked)


@register_selector("gold", needs=("credit",))
def gold_selector(pairs: ScoredPairs, k_w: float = 0.3, k_l: float = 0.3, min_tokens: int = 1):
    """Diagnostic upper bound of any oracle: ``topk`` by the world's gold per-token credit instead of the
    oracle's rewards (highest of the chosen, lowest of the rejected), ties broken at random with the run's seed."""
    rows, seed = pairs.rows, pairs.seed
    return (_topk_random_ties(pairs.chosen_credit, pairs.chosen_valid, k_w, True,
                              [seed * 1_000_003 + 2 * r for r in rows], min_tokens),
            _topk_random_ties(pairs.rejected_credit, pairs.rejected_valid, k_l, False,
                              [seed * 1_000_003 + 2 * r + 1 for r in rows], min_tokens))


def select_from_scores(
    chosen_scores: Sequence[Sequence[float]],
    rejected_scores: Sequence[Sequence[float]],
    selector: str = "topk",
    *,
    seed: int = 0,
    rows: Sequence[int] | None = None,
    ids: tuple[Sequence[Sequence[int]], Sequence[Sequence[int]]] | None = None,
    eos_id: int | None = None,
    credit: tuple[Sequence[Sequence[float]], Sequence[Sequence[float]]] | None = None,
    **hyperparameters,
) -> tuple[list[list[bool]], list[list[bool]]]:
    """Offline selection over a whole scored dataset (ragged per-response score lists).

    ``selector`` names a registered selector (:data:`SELECTORS`: ``topk``, ``threshold``, ``adaptive``,
    ``random``, ``noEOS``, ``gold``); ``hyperparameters`` are its own (e.g. ``k_w=0.3, k_l=0.3``). A
    selector that needs token ids gets ``ids`` (chosen, rejected) and ``eos_id``; one that needs gold
    credit gets ``credit`` (chosen, rejected), aligned with the scores. Returns per-response masks
    aligned with the score lists.
    """
    spec = get_selector(selector)
    spec.check(hyperparameters)
    if "ids" in spec.needs and (ids is None or eos_id is None):
        raise ConfigError(f"selector {selector!r} needs the responses' token ids and the EOS id")
    if "credit" in spec.needs and credit is None:
        raise ConfigError(f"selector {selector!r} needs gold per-token credit (a mini world's scored data)")
    rows = list(range(len(chosen_scores))) if rows is None else list(rows)
    cs, cv = pad_ragged(chosen_scores)
    rs, rv = pad_ragged(rejected_scores)
    check_scores(cs, cv, "chosen_scores", rows)
    check_scores(rs, rv, "rejected_scores", rows)
    for name, valid in (("chosen_scores", cv), ("rejected_scores", rv)):
        empty = (valid.sum(-1) == 0).nonzero()
        if len(empty):
            raise DataError(f"row {rows[int(empty[0])]}: {name} is empty")
    extra = {}
    if ids is not None:
        extra.update(chosen_ids=pad_ragged(ids[0], fill=-1)[0].long(), rejected_ids=pad_ragged(ids[1], fill=-1)[0].long(),
                     eos_id=eos_id)
    if credit is not None:
        extra.update(chosen_credit=pad_ragged(credit[0])[0], rejected_credit=pad_ragged(credit[1])[0])
    for name in ("chosen_ids", "rejected_ids", "chosen_credit", "rejected_credit"):
        if name in extra and extra[name].shape != (cs if name.startswith("chosen") else rs).shape:
            raise DataError(f"{name}: shape {tuple(extra[name].shape)} does not match the scores'")
    cm, rm = spec.fn(ScoredPairs(cs, cv, rs, rv, rows, seed, **extra), **hyperparameters)
    return unpad(cm, cv), unpad(rm, rv)
