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


def test_selection_agreement_by_hand():
    # response 1: gold top-3 (largest) = tokens 1, 4, 9; the scores pick 1, 4 and 0 -> precision 2/3,
    # captured positive credit (3 + 2) / (3 + 2 + 1) = 5/6.
    # response 2: one token of two; the scores pick token 0, the gold top is token 1 -> precision 0;
    # it has no positive credit, so it is left out of the mass mean.
    scores = [[5.0, 9.0, 0.0, 0.0, 8.0, 0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 0.0]]
    gold = [[0.0, 3.0, 0.0, -1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0], [-1.0, 0.0]]
    out = selection_agreement(scores, gold, k=0.3)
    assert out["precision"] == pytest.approx((2 / 3 + 0.0) / 2)
    assert out["gold_mass"] == pytest.approx(5 / 6)
    # rejected side (lowest first): response 1 keeps token 2 (lowest score among the ties, the earliest),
    # the gold bottom is token 3 -> precision 0, mass 0 of the negative credit 1; response 2 keeps token 1,
    # the gold bottom is token 0 -> precision 0, negative credit 1 of which 0 is captured.
    low = selection_agreement(scores, gold, k=0.1, largest=False)
    assert low["precision"] == 0.0 and low["gold_mass"] == 0.0


def test_random_selection_is_chance_level_and_seeded():
    # 400 copies of one response whose gold top-3 are its first three tokens: a uniform draw of 3 of
    # 10 tokens hits 3 * 3/10 of them on average, so precision ~ 0.3 (standard error ~ 0.012), while a
    # draw that always took the first (or last) tokens would give 1 (or 0).
    gold = [[3.0, 2.0, 1.0] + [0.0] * 7] * 400
    scores = [[0.0] * 7 + [1.0, 2.0, 3.0]] * 400  # the scores pick the last three: precision 0
    out = selection_agreement(scores, gold, k=0.3, seed=1)
    assert out["precision"] == 0.0 and out["gold_mass"] == 0.0
    assert out["random_precision"] == pytest.approx(0.3, abs=0.05)
    assert out["random_gold_mass"] == pytest.approx(0.3, abs=0.05)  # each gold token is drawn with probability 0.3
    assert selection_agreement(scores, gold, k=0.3, seed=1) == out
    assert selection_agreement(scores, gold, k=0.3, seed=2)["random_precision"] != out["random_precision"]
