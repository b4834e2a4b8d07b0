"""Token rewards: value, alignment with response tokens, batching invariance, caching, bad input."""

import pytest
import torch
from datasets import Dataset

from sepo import scoring
from sepo.data import tokenize_preferences
from sepo.errors import ConfigError, DataError, TokenizerMismatchError
from sepo.scoring import score_dataset, token_rewards

ROWS = {
    "prompt": ["review of the pasta :", "review of the soup :", "the room was"],
    "chosen": [" the pasta was very good .", " fine .", " clean and the staff were kind ."],
    "rejected": [" the pasta was bad .", " the soup was not good at all .", " terrible ."],
}


@pytest.fixture(scope="module")
def tokenized(tokenizer):
    return tokenize_preferences(Dataset.from_dict(ROWS), tokenizer, max_length=64)[0]


def one_by_one(model, prompt_ids, response_ids):
    """Naive per-example log-probs of the response tokens: full-vocabulary log-softmax, no batching."""
    ids = torch.tensor([prompt_ids + response_ids])
    logps = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    start = len(prompt_ids)
    return [logps[start + i - 1, t].item() for i, t in enumerate(response_ids)]


def test_rewards_equal_beta_times_logratio_per_response_token(tokenized, model_pair, tokenizer):
    oracle, ref = model_pair
    out = token_rewards(oracle, ref, tokenized, beta=0.5, batch_size=2, pad_id=tokenizer.pad_token_id)
    for i, row in enumerate(tokenized):
        for side in ("chosen", "rejected"):
            ids = row[f"{side}_ids"]
            got = out[f"{side}_scores"][i]
            assert len(got) == len(ids)  # prompt tokens and padding are never scored
            o, r = one_by_one(oracle, row["prompt_ids"], ids), one_by_one(ref, row["prompt_ids"], ids)
            assert got == pytest.approx([0.5 * (a - b) for a, b in zip(o, r)], abs=1e-4)


def test_batch_size_does_not_change_scores(tokenized, model_pair, tokenizer):
    a = token_rewards(*model_pair, tokenized, beta=1.0, batch_size=1, pad_id=tokenizer.pad_token_id)
    b = token_rewards(*model_pair, tokenized, beta=1.0, batch_size=3, pad_id=tokenizer.pad_token_id)
    for side in a:
        for x, y in zip(a[side], b[side]):
            assert x == pytest.approx(y, abs=1e-5)


def test_reference_log_probs_are_computed_once_per_reference_and_pairs(tokenized, model_pair, tokenizer, tmp_path,
                                                                        monkeypatch):
    """Scoring against a cached reference gives exactly the scores of scoring without a cache; another oracle
    against the same reference reuses its log-probs; other weights or pairs never do."""
    oracle, ref = model_pair
    plain = token_rewards(oracle, ref, tokenized, beta=0.3, batch_size=2, pad_id=tokenizer.pad_token_id)
    calls = []
    real = scoring.response_logps
    monkeypatch.setattr(scoring, "response_logps", lambda model, *a, **k: calls.append(model) or real(model, *a, **k))
    kwargs = dict(beta=0.3, batch_size=2, pad_id=tokenizer.pad_token_id, reference_cache_dir=tmp_path)
    assert token_rewards(oracle, ref, tokenized, **kwargs) == plain  # bit for bit
    assert token_rewards(oracle, ref, tokenized, **kwargs) == plain
    assert [m is ref for m in calls] == [False, True, False]  # the second call read the reference from the cache
    token_rewards(ref, oracle, tokenized, **kwargs)  # another reference: computed
    token_rewards(oracle, ref, tokenized.select([0, 1]), **kwargs)  # other pairs: computed
    token_rewards(oracle, ref, tokenized, **{**kwargs, "batch_size": 3})  # other batches round otherwise: computed
    assert len(calls) == 9  # each of the last three computed both models' log-probs


def test_cache_reuses_and_invalidates(tokenized, model_pair, tokenizer, tmp_path, monkeypatch):
    calls = []
    real = scoring.token_rewards
    monkeypatch.setattr(scoring, "token_rewards", lambda *a, **k: calls.append(1) or real(*a, **k))
    kwargs = dict(cache_dir=tmp_path, oracle_tokenizer=tokenizer, reference_tokenizer=tokenizer)
    first = score_dataset(tokenized, *model_pair, beta=0.1, **kwargs)
    again = score_dataset(tokenized, *model_pair, beta=0.1, **kwargs)
    assert len(calls) == 1 and first["chosen_scores"] == again["chosen_scores"]
    moved = tokenized.remove_columns("row").add_column("row", [7, 8, 9])  # the same pairs elsewhere in a file
    reused = score_dataset(moved, *model_pair, beta=0.1, **kwargs)
    assert len(calls) == 1 and reused["row"] == [7, 8, 9] and reused["rejected_scores"] == first["rejected_scores"]
    score_dataset(tokenized, *model_pair, beta=0.2, **kwargs)  # new beta: new scores
    score_dataset(tokenized.select([0, 1]), *model_pair, beta=0.1, **kwargs)  # new data
    oracle, ref = model_pair
    changed = type(oracle)(oracle.config)
    changed.load_state_dict(oracle.state_dict())
    with torch.no_grad():
        changed.lm_head.weight[0, 0] += 1.0
    score_dataset(tokenized, changed, ref, beta=0.1, **kwargs)  # new oracle weights
    assert len(calls) == 4
    assert len(list(tmp_path.iterdir())) == 4


def test_tokenizer_mismatch_and_bad_beta(tokenized, model_pair, tokenizer, tmp_path):
    import sys
    sys.path.insert(0, "tests")
    from conftest import train_tiny_tokenizer

    with pytest.raises(TokenizerMismatchError):
        score_dataset(tokenized, *model_pair, oracle_tokenizer=tokenizer,
                      reference_tokenizer=train_tiny_tokenizer(280), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="beta"):
        score_dataset(tokenized, *model_pair, beta=0.0, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_non_finite_scores_name_the_row_and_write_nothing(tokenized, model_pair, tmp_path):
    oracle, ref = model_pair
    broken = type(oracle)(oracle.config)
    broken.load_state_dict(oracle.state_dict())
    with torch.no_grad():
        broken.lm_head.weight.fill_(float("nan"))
    with pytest.raises(DataError, match=r"row \d+: (chosen|rejected)_scores\[0\] is not finite"):
        score_dataset(tokenized, broken, ref, cache_dir=tmp_path)
    assert [p for p in tmp_path.iterdir()] == []


def test_untokenised_dataset_is_refused(model_pair):
    with pytest.raises(DataError, match="no column 'prompt_ids'"):
        score_dataset(Dataset.from_dict(ROWS), *model_pair)
