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
