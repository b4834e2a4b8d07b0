"""Effects, t-intervals and verdicts."""

import math

import pytest

from sepo.stats import FAILS, HOLDS, INCONCLUSIVE, MIXED, combine, effect, paired_effect, spearman, t_interval, verdict


def test_t_interval_by_hand():
    # mean 2, sd 1, n 3: half-width = t(0.975, 2) * 1 / sqrt(3) = 4.3027 / 1.7321 = 2.4841
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(2.4841, abs=1e-3) and mean - low == pytest.approx(2.4841, abs=1e-3)
    assert t_interval([5.0])[1] == -math.inf


def test_verdicts():
    assert verdict(effect("x", [1.0, 1.1, 0.9])) == HOLDS
    assert verdict(effect("x", [-1.0, -1.1, -0.9])) == FAILS
    assert verdict(effect("x", [-1.0, 1.0, 0.1])) == INCONCLUSIVE
    assert verdict(effect("x", [-1.0, -1.1, -0.9]), direction=-1) == HOLDS
    assert verdict(effect("x", [1.0, 1.1, 0.9]), threshold=2.0) == FAILS
    assert combine([HOLDS, HOLDS]) == HOLDS and combine([HOLDS, FAILS]) == MIXED
    assert combine([HOLDS, FAILS, INCONCLUSIVE]) == MIXED
    assert combine([INCONCLUSIVE, FAILS]) == FAILS  # no part holds: not "mixed"
    assert combine([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE


def test_paired_effect_and_spearman():
    e = paired_effect("d", [3.0, 4.0, 5.0], [1.0, 2.0, 3.0])
    assert e.values == [2.0, 2.0, 2.0] and e.low == e.high == 2.0
    with pytest.raises(ValueError, match="unequal length"):
        paired_effect("d", [1.0], [1.0, 2.0])
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
