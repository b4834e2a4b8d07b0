"""Carrying token values across tokenizers by character offsets."""

import pytest

from sepo.errors import DataError
from sepo.transfer import carry_column, carry_values


def test_carry_by_hand():
    # text "not good": source tokens "not"(0,3) " good"(3,8) EOS(8,8); target "no"(0,2) "t"(2,3) " go"(3,6) "od"(6,8) EOS
    src = [-1.0, 2.0, 0.5]
    out = carry_values(src, [(0, 3), (3, 8), (8, 8)], [(0, 2), (2, 3), (3, 6), (6, 8), (8, 8)])
    assert out == pytest.approx([-2 / 3, -1 / 3, 2.0 * 3 / 5, 2.0 * 2 / 5, 0.5])
    assert sum(out) == pytest.approx(sum(src))


def test_merge_into_coarser_tokens_sums():
    out = carry_values([1.0, 2.0, 3.0], [(0, 2), (2, 4), (4, 6)], [(0, 4), (4, 6)])
    assert out == pytest.approx([3.0, 3.0])


def test_identity_when_tokenizers_agree():
    offsets = [(0, 3), (3, 5), (5, 5)]
    assert carry_values([0.1, -0.2, 0.3], offsets, offsets) == pytest.approx([0.1, -0.2, 0.3])


def test_errors_name_the_row():
    with pytest.raises(DataError, match="row 9: 1 values for 2 source tokens"):
        carry_column([[1.0]], [[(0, 1), (1, 2)]], [[(0, 2)]], rows=[9])
