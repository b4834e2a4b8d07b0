"""Selectors: counts, ranges, ties, and that selected positions carry the scored token ids."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sepo import selectors as S
from sepo.data import build_sequences
from sepo.errors import ConfigError, DataError

score_lists = st.lists(
    st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=1, max_size=12), min_size=1, max_size=6
)
fractions = st.floats(0.01, 1.0)


@settings(max_examples=60, deadline=None)
@given(score_lists, fractions)
def test_topk_counts_and_extremes(values, k):
    scores, valid = S.pad_ragged(values)
    top = S.topk_select(scores, valid, k, largest=True)
    bottom = S.topk_select(scores, valid, k, largest=False)
    for i, v in enumerate(values):
        n = len(v)
        expected = min(n, max(1, math.floor(n * k + 1e-6)))
        assert int(top[i].sum()) == int(bottom[i].sum()) == expected
        assert not (top[i] & ~valid[i]).any()
        chosen = scores[i][top[i]]
        rest = scores[i][valid[i] & ~top[i]]
        if len(rest):
            assert chosen.min() >= rest.max()
        low = scores[i][bottom[i]]
        rest = scores[i][valid[i] & ~bottom[i]]
        if len(rest):
            assert low.max() <= rest.min()


def test_count_rule_examples_and_min_tokens():
    scores, valid = S.pad_ragged([[0.0] * 10, [0.0] * 3, [0.0] * 20])
    assert S.topk_counts(valid, 0.3).tolist() == [3, 1, 6]  # int(0.3 * 3) = 0 -> one token kept
    assert S.topk_counts(valid, 0.3, min_tokens=0).tolist() == [3, 0, 6]
    assert S.topk_counts(valid, 1.0).tolist() == [10, 3, 20]


def test_ties_are_broken_by_position():
    scores, valid = S.pad_ragged([[1.0, 2.0, 2.0, 2.0, 0.0]])
    assert S.topk_select(scores, valid, 0.4).tolist() == [[False, True, True, False, False]]
    scores, valid = S.pad_ragged([[1.0, 1.0, 1.0, 1.0]])
    assert S.topk_select(scores, valid, 0.5, largest=False).tolist() == [[True, True, False, False]]


@pytest.mark.parametrize("k", [0.0, -0.1, 1.5, float("nan"), True])
def test_k_outside_unit_interval_is_rejected(k):
    scores, valid = S.pad_ragged([[1.0, 2.0]])
    with pytest.raises(ConfigError, match="k = "):
        S.topk_select(scores, valid, k)


def test_sepo_select_uses_separate_ratios():
    c, r = [[float(i) for i in range(10)]], [[float(i) for i in range(10)]]
    cm, rm = S.select_from_scores(c, r, "topk", k_w=0.3, k_l=0.1)
    assert [i for i, m in enumerate(cm[0]) if m] == [7, 8, 9]
    assert [i for i, m in enumerate(rm[0]) if m] == [0]


def test_non_finite_scores_name_the_row():
    with pytest.raises(DataError, match=r"row 41: rejected_scores\[1\] = nan"):
        S.select_from_scores([[1.0, 2.0]], [[0.0, float("nan")]], rows=[41])
    with pytest.raises(DataError, match=r"row 7: chosen_scores\[0\] = inf"):
        S.select_from_scores([[float("inf")]], [[0.0]], rows=[7])


def test_dataset_threshold_keeps_k_of_all_tokens():
    values = [[float(i) for i in range(10)], [float(10 + i) for i in range(10)]]
    cm, rm = S.select_from_scores(values, values, "threshold", k_w=0.25, k_l=0.1)
    assert sum(map(sum, cm)) == 5 and cm[0] == [False] * 10  # the cut falls inside the second response
    assert sum(map(sum, rm)) == 2 and rm[1] == [False] * 10


@settings(max_examples=60, deadline=None)
@given(score_lists, st.floats(0.05, 1.0))
def test_adaptive_is_the_smallest_set_holding_p_of_the_mass(values, p):
    scores, valid = S.pad_ragged(values)
    mask = S.adaptive_select(scores, valid, p, largest=True)
    for i, v in enumerate(values):
        pos = [max(x, 0.0) for x in v]
        total = sum(pos)
        picked = sorted((x for x, m in zip(v, mask[i][: len(v)].tolist()) if m), reverse=True)
        assert len(picked) >= 1
        if total > 0:
            held = sum(max(x, 0.0) for x in picked)
            assert held >= p * total - 1e-4 * max(1.0, total)
            assert held - max(picked[-1], 0.0) < p * total + 1e-4 * max(1.0, total) or len(picked) == 1
        else:
            assert len(picked) == 1


def test_adaptive_example():
    # chosen mass 10 = 6 + 3 + 1; p = 0.6 needs {6}; p = 0.9 needs {6, 3}; p = 1 all three
    scores, valid = S.pad_ragged([[1.0, -2.0, 6.0, 3.0]])
    assert S.adaptive_select(scores, valid, 0.6).tolist() == [[False, False, True, False]]
    assert S.adaptive_select(scores, valid, 0.9).tolist() == [[False, False, True, True]]
    assert S.adaptive_select(scores, valid, 1.0).tolist() == [[True, False, True, True]]
    # rejected side: negative mass is 2 -> the single token -2
    assert S.adaptive_select(scores, valid, 0.5, largest=False).tolist() == [[False, True, False, False]]


def test_random_select_matches_sepo_counts_and_is_seeded():
    values = [[float(i) for i in range(n)] for n in (5, 9, 13)]
    a = S.select_from_scores(values, values, "random", k_w=0.3, seed=1)
    b = S.select_from_scores(values, values, "random", k_w=0.3, seed=1)
    c = S.select_from_scores(values, values, "random", k_w=0.3, seed=2)
    s = S.select_from_scores(values, values, "topk", k_w=0.3)
    assert a == b and a != c
    assert [sum(m) for m in a[0]] == [sum(m) for m in s[0]]


def test_selector_registry_checks_hyperparameters_and_names_the_selector():
    assert set(S.SELECTORS) == {"topk", "threshold", "adaptive", "random", "noEOS", "gold"}
    assert S.get_selector("adaptive").hyperparameters == {"mass": 0.5}
    with pytest.raises(ConfigError, match=r"selector 'topk' takes \['k_l', 'k_w', 'min_tokens'\], not \['p'\]"):
        S.select_from_scores([[1.0]], [[1.0]], "topk", p=0.5)
    with pytest.raises(ConfigError, match="mass = 0: must be a fraction"):
        S.select_from_scores([[1.0]], [[1.0]], "adaptive", mass=0)
    with pytest.raises(ConfigError, match="unknown selector 'sepo'"):
        S.select_from_scores([[1.0]], [[1.0]], "sepo")
    # the registry entry and the function it wraps select the same tokens
    values = [[3.0, 1.0, 2.0, 0.0]]
    cm, rm = S.select_from_scores(values, values, "adaptive", mass=0.6)
    scores, valid = S.pad_ragged(values)
    assert cm == S.unpad(S.adaptive_select(scores, valid, 0.6), valid)
    assert rm == S.unpad(S.adaptive_select(scores, valid, 0.6, largest=False), valid)


def test_quantile_select_keeps_the_top_40_percent():
    scores, valid = S.pad_ragged([[float(i) for i in range(10)], [0.0, 1.0, 2.0, 3.0, 4.0]])
    mask = S.quantile_select(scores, valid, 0.6)
    # quantile 0.6 of 0..9 is 5.4 -> {6, 7, 8, 9}; of 0..4 it is 2.4 -> {3, 4}
    assert mask[0].nonzero().squeeze(-1).tolist() == [6, 7, 8, 9]
    assert mask[1].nonzero().squeeze(-1).tolist() == [3, 4]


def test_selective_dpo_scores_sign_convention():
    policy, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    assert S.selective_dpo_scores(policy, ref, chosen=True).tolist() == [[-0.5, 1.0]]
    assert S.selective_dpo_scores(policy, ref, chosen=False).tolist() == [[0.5, -1.0]]


def test_confpo_selects_below_mean_probability():
    logps = torch.log(torch.tensor([[0.9, 0.1, 0.5, 0.2, 0.7]]))
    valid = torch.tensor([[True, True, True, True, False]])
    # mean prob over the 4 valid tokens = 0.425
    assert S.confpo_select(logps, valid).tolist() == [[False, True, False, True, False]]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.lists(st.integers(3, 99), min_size=1, max_size=10)), min_size=1, max_size=4),
       fractions)
def test_selected_positions_carry_the_scored_token_ids(rows, k):
    """Mask -> sequence positions -> token ids: the ids a selection reports are the tokens that were scored."""
    prompts = [[1] * p for p, _ in rows]
    responses = [r for _, r in rows]
    scores = [[float((t * 7919) % 13) for t in r] for r in responses]  # any deterministic score per token
    masks, _ = S.select_from_scores(scores, scores, "topk", k_w=k)
    batch = build_sequences(prompts, responses, 0, {"selected": masks})
    for i, r in enumerate(responses):
        at_positions = batch["input_ids"][i, batch["selected"][i].nonzero().squeeze(-1) + 1].tolist()
        assert at_positions == S.selected_token_ids(r, masks[i])
        assert (batch["selected"][i] <= batch["response_mask"][i]).all()


def test_empty_response_and_unknown_method_are_named():
    with pytest.raises(DataError, match="row 3: chosen_scores is empty"):
        S.select_from_scores([[1.0], []], [[1.0], [1.0]], rows=[2, 3])
    with pytest.raises(ConfigError, match="unknown selector 'best'"):
        S.select_from_scores([[1.0]], [[1.0]], "best")


def test_no_eos_never_selects_eos_and_counts_the_other_tokens():
    eos = 2
    ids = [[5, 6, 7, 8, eos], [9, eos]]
    chosen = [[0.1, 0.2, 0.3, 0.4, 9.0], [0.5, 9.0]]    # EOS has the highest reward of the chosen
    rejected = [[0.1, 0.2, 0.3, 0.4, -9.0], [0.5, -9.0]]  # and the lowest of the rejected
    cm, rm = S.select_from_scores(chosen, rejected, "noEOS", ids=(ids, ids), eos_id=eos, k_w=0.5, k_l=0.5)
    assert cm == [[False, False, True, True, False], [True, False]]  # floor(0.5 * 4) = 2 of the non-EOS tokens
    assert rm == [[True, True, False, False, False], [True, False]]
    with_eos, _ = S.select_from_scores(chosen, rejected, "topk", k_w=0.5, k_l=0.5)
    assert with_eos[0][4] and with_eos[1] == [False, True]
    with pytest.raises(ConfigError, match="needs the responses' token ids"):
        S.select_from_scores(chosen, rejected, "noEOS")


def test_gold_selects_by_credit_with_seeded_random_ties():
    scores = [[9.0, 0.0, 0.0, 0.0, 0.0, 0.0]] * 2  # the oracle's choice is ignored
    credit = [[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]] * 2  # one credited token, five tied at 0
    cm, rm = S.select_from_scores(scores, scores, "gold", credit=(credit, credit), k_w=0.34, k_l=0.34, seed=0)
    assert all(m[2] for m in cm) and all(sum(m) == 2 for m in cm)  # the credited token, plus one of the ties
    assert all(not m[2] and sum(m) == 2 for m in rm)  # rejected: the lowest credit, all ties
    draws = {tuple(S.select_from_scores(scores, scores, "gold", credit=(credit, credit), k_w=0.34, k_l=0.34, seed=s)[0][0])
             for s in range(8)}
    assert len(draws) > 1  # ties broken at random, by the seed
    again = S.select_from_scores(scores, scores, "gold", credit=(credit, credit), k_w=0.34, k_l=0.34, seed=3)
    assert again == S.select_from_scores(scores, scores, "gold", credit=(credit, credit), k_w=0.34, k_l=0.34, seed=3)
    with pytest.raises(ConfigError, match="needs gold per-token credit"):
        S.select_from_scores(scores, scores, "gold")
