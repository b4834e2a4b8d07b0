"""Token-reward analyses against hand computation."""

import math

import pytest

from sepo.analysis import concentration, rank_agreement, selection_agreement, top_share


def test_top_share_by_hand():
    assert top_share([1.0] * 10, 0.3) == pytest.approx(0.3)
    assert top_share([0.0, 5.0, 0.0, 0.0], 0.3) == pytest.approx(1.0)  # one token of four kept: all the mass
    assert top_share([-3.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0.1) == pytest.approx(0.75)
    assert math.isnan(top_share([0.0, 0.0], 0.5))
    c = concentration([[1.0] * 10, [0.0, 5.0, 0.0, 0.0]], (0.1, 0.3))
    assert c == {"top10": pytest.approx((0.1 + 1.0) / 2), "top30": pytest.approx((0.3 + 1.0) / 2)}


def test_rank_agreement():
    assert rank_agreement([[1, 2, 3, 4]], [[10, 20, 30, 40]]) == pytest.approx(1.0)
    assert rank_agreement([[1, 2, 3, 4], [4, 3, 2, 1]], [[1, 2, 3, 4], [1, 2, 3, 4]]) == pytest.approx(0.0)
    assert math.isnan(rank_agreement([[1, 2]], [[1, 2]]))  # too short


def test_selection_agreement_perfect_and_inverted():
    gold = [[0.0, 3.0, 0.0, -1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0]]
    perfect = selection_agreement(gold, gold, k=0.3)
    assert perfect["precision"] == 1.0 and perfect["gold_mass"] == pytest.approx(1.0)
    inverted = selection_agreement([[-x for x in gold[0]]], gold, k=0.3)
    assert inverted["precision"] == 0.0 and inverted["gold_mass"] == 0.0
    rejected = selection_agreement(gold, gold, k=0.1, largest=False)
    assert rejected["precision"] == 1.0 and rejected["gold_mass"] == pytest.approx(1.0)
    assert 0.0 <= perfect["random_precision"] <= 1.0
