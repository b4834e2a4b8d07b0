"""Analyses of a scored dataset: which tokens the selection keeps."""

def test_selected_tokens_counts_what_the_selection_keeps(tokenizer):
    from datasets import Dataset

    from sepo.analysis import selected_tokens

    # two pairs; with k = 0.5 the chosen keeps its 2 highest tokens of 4, the rejected its lowest 1 of 2
    a, b, c, eos = 10, 11, 12, tokenizer.eos_token_id
    scored = Dataset.from_dict({
        "chosen_ids": [[a, b, c, eos], [a, a, c, eos]], "rejected_ids": [[b, eos], [c, eos]],
        "chosen_scores": [[0.9, 0.1, 0.8, -1.0], [0.7, 0.6, 0.0, -1.0]], "rejected_scores": [[0.0, -2.0], [0.0, -3.0]],
        "chosen_offsets": [[[0, 1], [1, 2], [2, 3], [3, 3]]] * 2, "rejected_offsets": [[[0, 1], [1, 1]]] * 2,
        "chosen_credit": [[[0, 1, 0.5]], [[0, 1, 0.25]]], "rejected_credit": [[], []],
    })
    frame = selected_tokens(scored, tokenizer, k=0.5)
    chosen = frame[frame.side == "chosen"].set_index("token")
    assert chosen.loc[repr(tokenizer.decode([a])), "selected"] == 3  # a twice in pair 2, once in pair 1
    assert chosen.loc[repr(tokenizer.decode([a])), "share_of_selection"] == 0.75
    assert chosen.loc[repr(tokenizer.decode([a])), "share_of_tokens"] == 3 / 8
    assert chosen.loc[repr(tokenizer.decode([a])), "mean_gold_credit"] == (0.5 + 0.25) / 3  # credit on token 0 only
    rejected = frame[frame.side == "rejected"]
    assert rejected.token.tolist() == [repr(tokenizer.decode([eos]))] and rejected.selected.tolist() == [2]


def test_selection_profile_tells_the_arms_apart(tokenizer):
    from datasets import Dataset

    from sepo.analysis import selection_profile

    # the oracle's bottom-k of each rejected response is EOS; the gold credit sits on token 0
    a, b, eos = 10, 11, tokenizer.eos_token_id
    scored = Dataset.from_dict({
        "chosen_ids": [[a, b, eos], [b, a, eos]], "rejected_ids": [[a, b, eos], [b, b, eos]],
        "chosen_scores": [[0.1, 0.2, 0.9], [0.3, 0.2, 0.8]], "rejected_scores": [[0.1, 0.0, -1.0], [0.0, 0.2, -2.0]],
        "chosen_offsets": [[[0, 1], [1, 2], [2, 2]]] * 2, "rejected_offsets": [[[0, 1], [1, 2], [2, 2]]] * 2,
        "chosen_credit": [[[0, 1, 0.5]], [[0, 1, 0.25]]], "rejected_credit": [[[0, 1, -0.5]], [[0, 1, -0.25]]],
    })
    frame = selection_profile(scored, tokenizer, k=0.34).set_index(["arm", "side"])
    assert frame.loc[("SePO", "chosen"), "eos_share"] == 1.0 and frame.loc[("SePO", "rejected"), "eos_share"] == 1.0
    assert frame.loc[("SePO-noEOS", "rejected"), "eos_share"] == 0.0
    # gold credit selects exactly the credited tokens: all of them carry credit, the oracle's none
    assert frame.loc[("SePO-gold", "chosen"), "credited_share"] == 1.0 and frame.loc[("SePO", "chosen"), "credited_share"] == 0.0
    assert frame.loc[("SePO-gold", "chosen"), "mean_gold_credit"] == (0.5 + 0.25) / 2
    assert frame.loc[("SePO-gold", "rejected"), "mean_gold_credit"] == (-0.5 - 0.25) / 2
    assert (frame.selected == 2).all()  # one token of three per response, two responses, every arm
