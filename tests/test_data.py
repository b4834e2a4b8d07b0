"""Preference data: validation, tokenisation, truncation and the position of response tokens."""

import pytest
import torch
from datasets import Dataset

from sepo.data import (
    build_sequences,
    check_same_tokenizer,
    collate_pairs,
    row_places,
    tokenize_preferences,
    tokenize_prompt,
    tokenize_prompts,
    tokenize_response,
    tokenize_responses,
    where,
)
from sepo.errors import DataError, TokenizerMismatchError
from sepo.logprobs import token_logps

ROWS = {
    "prompt": ["review of the pasta :", "review of the soup :"],
    "chosen": [" the pasta was very good .", " the soup was fine ."],
    "rejected": [" the pasta was bad .", " the soup was not good at all ."],
}


def test_tokenize_response_appends_eos_and_offsets_cover_the_text(tokenizer):
    text = " the pasta was very good ."
    ids, offsets = tokenize_response(tokenizer, text)
    assert ids[-1] == tokenizer.eos_token_id and offsets[-1] == (len(text), len(text))
    assert tokenizer.decode(ids[:-1]) == text
    assert "".join(text[a:b] for a, b in offsets) == text


def test_tokenize_preferences_adds_ids_and_keeps_rows(tokenizer):
    ds, report = tokenize_preferences(Dataset.from_dict(ROWS), tokenizer, max_length=64)
    assert report.rows_in == report.rows_out == 2 and ds["row"] == [0, 1]
    assert ds[0]["prompt_ids"][0] == tokenizer.bos_token_id
    assert tokenizer.decode(ds[1]["rejected_ids"], skip_special_tokens=True) == ROWS["rejected"][1]


def test_response_positions_follow_the_shift_convention(tokenizer):
    """The response mask marks log-prob positions t whose *next* token input_ids[t+1] is a response token."""
    ds, _ = tokenize_preferences(Dataset.from_dict(ROWS), tokenizer, max_length=64)
    selected = [[i % 2 == 0 for i in range(len(r))] for r in ds["chosen_ids"]]
    batch = build_sequences(ds["prompt_ids"], ds["chosen_ids"], tokenizer.pad_token_id, {"selected": selected})
    for i, row in enumerate(ds):
        positions = batch["response_mask"][i].nonzero().squeeze(-1)
        assert positions[0] == len(row["prompt_ids"]) - 1
        assert batch["input_ids"][i, positions + 1].tolist() == row["chosen_ids"]
        picked = batch["input_ids"][i, batch["selected"][i].nonzero().squeeze(-1) + 1].tolist()
        assert picked == [t for t, s in zip(row["chosen_ids"], selected[i]) if s]
    assert batch["attention_mask"].sum(-1).tolist() == [len(p) + len(r) for p, r in zip(ds["prompt_ids"], ds["chosen_ids"])]


def test_collate_pairs_puts_chosen_first_then_rejected(tokenizer, model_pair):
    ds, _ = tokenize_preferences(Dataset.from_dict(ROWS), tokenizer, max_length=64)
    batch = collate_pairs(list(ds), tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 4
    n_rejected = len(ds[0]["rejected_ids"])
    assert int(batch["response_mask"][2].sum()) == n_rejected
    logps = token_logps(model_pair[0], batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    assert (logps[batch["response_mask"]] < 0).all() and (logps[~batch["response_mask"]] == 0).all()


@pytest.mark.parametrize(
    "rows,match",
    [
        ({"prompt": ["p"], "chosen": ["a"]}, r"missing column\(s\) \['rejected'\]"),
        ({"prompt": ["p", "q"], "chosen": ["a", "  "], "rejected": ["b", "c"]}, r"row 1: field 'chosen' is an empty response"),
        ({"prompt": ["p"], "chosen": ["a"], "rejected": [None]}, r"row 0: field 'rejected' must be a string"),
    ],
)
def test_malformed_rows_name_the_row_and_field(tokenizer, rows, match):
    with pytest.raises(DataError, match=match):
        tokenize_preferences(Dataset.from_dict(rows), tokenizer, max_length=64)


@pytest.mark.parametrize("bad", [{"chosen": ""}, {"rejected": None}, {"prompt": 3}])
def test_a_bad_second_line_of_a_jsonl_file_is_named_by_line_prompt_id_and_field(tokenizer, tmp_path, bad):
    import json

    from sepo.trainer import load_preferences

    rows = [{"prompt_id": f"id-{i}", **{k: v[i] for k, v in ROWS.items()}} for i in range(2)]
    rows[1].update(bad)
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    field = next(iter(bad))
    data = load_preferences(str(path), "train")
    assert data["line"] == [1, 2] and data["row"] == [0, 1]
    with pytest.raises(DataError, match=rf"prefs\.jsonl line 2 \(prompt_id 'id-1'\): field '{field}'"):
        tokenize_preferences(data, tokenizer, max_length=64, source=str(path))


def test_where_names_line_then_row_then_position(tokenizer):
    assert where({"line": 4, "row": 2, "prompt_id": "x"}, 0, "f.jsonl") == "f.jsonl line 4 (prompt_id 'x')"
    assert where({"row": 2}, 0, "hub/set [train]") == "hub/set [train] row 2"
    assert where({"prompt": "p"}, 3) == "row 3"
    data = Dataset.from_dict({**ROWS, "row": [7, 9], "prompt_id": ["a", None]})
    assert row_places(data, "d") == ["d row 7 (prompt_id 'a')", "d row 9"]
    tokenized, _ = tokenize_preferences(data, tokenizer, max_length=64)
    assert tokenized["row"] == [7, 9]  # a row keeps the index it was loaded with


def test_truncation_cuts_prompt_then_response_and_all_prompt_is_an_error(tokenizer):
    long = {"prompt": ["review of the pasta : " * 10], "chosen": [" good . " * 10], "rejected": [" bad ."]}
    ds, report = tokenize_preferences(Dataset.from_dict(long), tokenizer, max_length=24, max_prompt_length=8)
    assert len(ds[0]["prompt_ids"]) == 8 and len(ds[0]["prompt_ids"]) + len(ds[0]["chosen_ids"]) == 24
    assert report.truncated_prompt == 1 and report.truncated_response == 1
    with pytest.raises(DataError, match="max_prompt_length"):
        tokenize_preferences(Dataset.from_dict(long), tokenizer, max_length=8, max_prompt_length=8)


def test_paper_filters_drop_and_count(tokenizer):
    rows = {"prompt": ["review of the pasta : " * 5, "hi", "review of the soup :"],
            "chosen": [" good .", " the soup was very good .", " the soup was very good ."],
            "rejected": [" bad .", " ok", " the soup was bad ."]}
    kwargs = dict(max_length=128, drop_prompt_longer_than=20, drop_response_shorter_than=4)
    ds, report = tokenize_preferences(Dataset.from_dict(rows), tokenizer, **kwargs)
    assert (report.dropped_long_prompt, report.dropped_short_response, report.rows_out) == (1, 1, 1)
    assert ds["row"] == [2] and ds["prompt"] == ["review of the soup :"]
    with pytest.raises(DataError, match="no row left"):
        tokenize_preferences(Dataset.from_dict(rows).select([0, 1]), tokenizer, **kwargs)


def test_conversational_rows_go_through_the_chat_template(tokenizer):
    tok = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    rows = {
        "prompt": [[{"role": "user", "content": "review the pasta"}]],
        "chosen": [[{"role": "user", "content": "review the pasta"}, {"role": "assistant", "content": " very good ."}]],
        "rejected": [[{"role": "user", "content": "review the pasta"}, {"role": "assistant", "content": " bad ."}]],
    }
    ds, _ = tokenize_preferences(Dataset.from_dict(rows), tok, max_length=64)
    assert tok.decode(ds[0]["prompt_ids"]) == "user: review the pasta\nassistant:"
    assert tok.decode(ds[0]["chosen_ids"], skip_special_tokens=True) == " very good ."
    bad = dict(rows, chosen=[[{"role": "user", "content": "x"}]])
    with pytest.raises(DataError, match="row 0: field 'chosen' must end with an assistant message"):
        tokenize_preferences(Dataset.from_dict(bad), tok, max_length=64)


def test_many_texts_encode_as_one_at_a_time_would(tokenizer):
    """Prompts and responses are encoded in one call per kind; each gets the ids a call of its own gives
    (plain prompts with the tokenizer's special tokens, chat prompts through the template without them)."""
    tok = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    prompts = ["review of the pasta :", [{"role": "user", "content": "review the soup"}], "the room was"]
    assert tokenize_prompts(tok, prompts) == [tokenize_prompt(tok, p) for p in prompts]
    assert tokenize_prompts(tok, prompts)[0][0] == tok.bos_token_id and tokenize_prompts(tok, prompts)[1][0] != tok.bos_token_id
    responses = [" very good .", [{"role": "user", "content": "x"}, {"role": "assistant", "content": " bad ."}], " fine"]
    assert tokenize_responses(tok, responses) == [tokenize_response(tok, r) for r in responses]
    assert tokenize_prompts(tok, []) == [] and tokenize_responses(tok, []) == []


def test_tokenizer_mismatch_is_named(tokenizer):
    import sys
    sys.path.insert(0, "tests")
    from conftest import train_tiny_tokenizer

    other = train_tiny_tokenizer(vocab_size=280)
    check_same_tokenizer(tokenizer, tokenizer)
    with pytest.raises(TokenizerMismatchError, match="oracle and reference tokenizers differ"):
        check_same_tokenizer(tokenizer, other)
