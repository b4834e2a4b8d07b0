"""Effects, confidence intervals and verdicts for the claims.

An *effect* is a difference measured once per seed (e.g. SePO's gold win rate minus DPO's, each
from the same seed's world and data). Its 95% confidence interval is Student's t over seeds. The
verdict reads the interval against zero (or a stated threshold): entirely on the claimed side,
"holds"; entirely on the other side, "does not hold"; spanning it, "inconclusive". A claim with
several parts holds when every part holds, is "mixed" when some parts hold and others do not, does
not hold when some part fails and none holds, and is otherwise inconclusive. Three more verdicts
come from the claims' own rules (:mod:`sepo.claims`): "not measured" (the data cannot answer, e.g.
no KL range that both methods reached), "premise not met" (what the claim presupposes is not seen)
and "confounded" (a control arm fails too, so the comparison cannot be read).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

HOLDS, FAILS, INCONCLUSIVE, MIXED = "holds", "does not hold", "inconclusive", "mixed"
NOT_MEASURED, PREMISE_NOT_MET, CONFOUNDED = "not measured", "premise not met", "confounded"


@dataclasses.dataclass
class Effect:
    """A per-seed effect with its mean and 95% t-interval."""

    name: str
    values: list[float]
    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] (n={self.n})"


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t confidence interval; a single value gives an infinite interval."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("t_interval: no values")
    mean = float(x.mean())
    if x.size == 1:
        return mean, -math.inf, math.inf
    sem = float(x.std(ddof=1) / math.sqrt(x.size))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=x.size - 1)) * sem
    return mean, mean - half, mean + half


def effect(name: str, values: Sequence[float], confidence: float = 0.95) -> Effect:
    mean, low, high = t_interval(values, confidence)
    return Effect(name, [float(v) for v in values], mean, low, high, len(values))


def paired_effect(name: str, a: Sequence[float], b: Sequence[float]) -> Effect:
    """Effect of ``a - b`` paired by seed."""
    if len(a) != len(b):
        raise ValueError(f"{name}: paired values of unequal length {len(a)} vs {len(b)}")
    return effect(name, [x - y for x, y in zip(a, b)])


def verdict(e: Effect, threshold: float = 0.0, direction: int = +1) -> str:
    """Verdict for the claim ``direction * (effect - threshold) > 0``."""
    low, high = (e.low - threshold, e.high - threshold)
    if direction < 0:
        low, high = -high, -low
    if low > 0:
        return HOLDS
    if high < 0:
        return FAILS
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """One verdict for a claim with several parts: all agree -> that verdict; some hold and some fail ->
    "mixed"; some fail and none holds -> "does not hold"; otherwise "inconclusive"."""
    unique = set(verdicts)
    if len(unique) == 1:
        return unique.pop()
    if HOLDS in unique and FAILS in unique:
        return MIXED
    if FAILS in unique:
        return FAILS
    return INCONCLUSIVE


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``y`` on ``x``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return float(np.polyfit(x, y, 1)[0])


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (NaN when either side is constant)."""
    if len(a) < 2:
        return float("nan")
    rho = scipy_stats.spearmanr(a, b).statistic
    return float(rho)
