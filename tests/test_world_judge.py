"""Gold judge of the mini world: VADER values by hand, degeneracy terms, leave-one-word-out credit."""

from __future__ import annotations

import math

import pytest

from sepo.errors import ConfigError, DataError
from sepo.world.judge import GoldJudge, credit_to_tokens, remove_span, words

PROMPT = "Review of the pasta at Luigi's:"


def compound(valence_sum: float) -> float:
    """VADER's normalisation of a summed valence (alpha = 15)."""
    return valence_sum / math.sqrt(valence_sum**2 + 15)


GOOD, BAD, FINE = 1.9, -2.5, 0.8  # VADER lexicon valences
NEGATION, BOOSTER = -0.74, 0.293  # VADER's negation factor and booster increment


@pytest.fixture(scope="module")
def judge():
    return GoldJudge()


def credits(judge, response):
    return {response[s:e]: c for s, e, c in judge.word_credit(PROMPT, response)}


def test_reward_is_vader_compound_on_natural_text(judge):
    assert judge.reward(PROMPT, "The pasta was good.") == pytest.approx(compound(GOOD), abs=1e-4)
    assert judge.reward(PROMPT, "The pasta was not good.") == pytest.approx(compound(GOOD * NEGATION), abs=1e-4)
    assert judge.reward(PROMPT, "The pasta was very good.") == pytest.approx(compound(GOOD + BOOSTER), abs=1e-4)
    assert judge.rewards([PROMPT, PROMPT], ["The pasta was good.", "The pasta was bad."]) == pytest.approx(
        [compound(GOOD), compound(BAD)], abs=1e-4)


def test_credit_of_not_good(judge):
    c = credits(judge, "The pasta was not good.")
    # without "not": "The pasta was good."; without "good": "The pasta was not." (no sentiment)
    assert c["not"] == pytest.approx(compound(GOOD * NEGATION) - compound(GOOD), abs=1e-4)
    assert c["good"] == pytest.approx(compound(GOOD * NEGATION), abs=1e-4)
    assert c["not"] < c["good"] < 0
    assert c["The"] == c["was"] == 0.0
    # the only subject word: removing it makes the response ignore the prompt
    assert c["pasta"] == pytest.approx(judge.off_subject_penalty)


def test_credit_of_very_good(judge):
    c = credits(judge, "The pasta was very good.")
    assert c["very"] == pytest.approx(compound(GOOD + BOOSTER) - compound(GOOD), abs=1e-4)
    assert 0 < c["very"] < 0.1 < c["good"]
    assert c["good"] == pytest.approx(compound(GOOD + BOOSTER), abs=1e-4)  # "very" alone has no valence


def test_credit_of_bad_but_fine(judge):
    # VADER's "but": words before it count half, words after it 1.5 times
    full = compound(0.5 * BAD + 1.5 * FINE)
    c = credits(judge, "The pasta was bad but fine.")
    assert judge.reward(PROMPT, "The pasta was bad but fine.") == pytest.approx(full, abs=1e-4)
    assert c["bad"] == pytest.approx(full - compound(1.5 * FINE), abs=1e-4)
    assert c["fine"] == pytest.approx(full - compound(0.5 * BAD), abs=1e-4)
    assert c["but"] == pytest.approx(full - compound(BAD + FINE), abs=1e-4)
    assert c["bad"] < 0 < c["fine"]


def test_degenerate_text_scores_badly(judge):
    natural = judge.reward(PROMPT, "The pasta was great.")
    off_subject = judge.reward(PROMPT, "The soup was great.")
    repeated = judge.reward(PROMPT, "The pasta was great great great great great.")
    run_on = judge.reward(PROMPT, "The pasta was great. " + "We sat near the window. " * 20)
    assert off_subject == pytest.approx(natural - judge.off_subject_penalty)
    assert repeated < natural - 0.3
    assert run_on < natural - 0.3
    terms = judge.terms(PROMPT, "The pasta was great great great great great.")
    assert terms["repetition"] == pytest.approx(judge.repeat_weight * (1 - 2 / 6 - judge.repeat_allowance))
    assert judge.reward(PROMPT, "") == 0.0 - judge.off_subject_penalty


def test_remove_span_leaves_single_spaces():
    assert remove_span("a bb c", 2, 4) == "a c"
    assert remove_span("a bb", 2, 4) == "a"
    assert words("It's fine, check-in was quick.") == [(0, 4), (5, 9), (11, 19), (20, 23), (24, 29)]


def test_credit_to_tokens_splits_evenly_and_skips_non_words():
    response = "Not bad!"
    spans = [(0, 3, -0.6), (4, 7, 0.9)]
    # tokens: "Not" | " b" | "ad" | "!" | EOS
    offsets = [(0, 3), (3, 5), (5, 7), (7, 8), (8, 8)]
    assert response[4:7] == "bad"
    assert credit_to_tokens(spans, offsets) == pytest.approx([-0.6, 0.45, 0.45, 0.0, 0.0])
    # one token covering two words gets both credits; sums are preserved
    assert credit_to_tokens(spans, [(0, 7), (7, 8)]) == pytest.approx([0.3, 0.0])
    assert credit_to_tokens([], [(0, 1)]) == [0.0]


def test_bad_inputs_fail_clearly():
    with pytest.raises(ConfigError, match="repeat_weight"):
        GoldJudge(repeat_weight=-1)
    with pytest.raises(ConfigError, match="max_words"):
        GoldJudge(max_words=0)
    with pytest.raises(DataError, match="2 prompts for 1 responses"):
        GoldJudge().rewards([PROMPT, PROMPT], ["x"])


def test_junk_counts_chunks_that_are_not_language(judge):
    assert judge.junk("The pasta was good.") == 0
    assert judge.junk("The pasta was goodxq.") == 1  # a word the language does not have
    assert judge.junk("The pasta\x15 was good.") == 1  # a control character
    assert judge.junk("The pasta was good \ufffd") == 1  # a byte that decoded to nothing
    assert judge.junk("Luigi's pasta, on Monday at 3: good!") == 0  # names, numbers and punctuation are clean
    soup = "I loved the pasta\ufffdlovely ruigi\x15 tasq good"
    t = judge.terms(PROMPT, soup)
    assert t["junk"] == pytest.approx(3 * 0.25) and judge.reward(PROMPT, soup) == pytest.approx(t["sentiment"] - 0.75)
    assert judge.terms(PROMPT, "xq " * 9 + "pasta")["junk"] == 1.0  # capped
    assert GoldJudge(junk_weight=0.0).reward(PROMPT, soup) == pytest.approx(t["sentiment"])
    # a count: removing a clean word leaves the penalty as it is, so clean neutral words keep zero credit
    c = credits(judge, "The pasta was good tasq.")
    assert c["was"] == 0.0 and c["tasq"] == pytest.approx(-0.25)


def test_the_worlds_own_text_has_no_junk(judge):
    import random

    from sepo.world import text

    rng = random.Random(0)
    for world in text.WORLD_NAMES:
        for prompt, response in text.sample_corpus(world, 2000, rng):
            assert judge.junk(response) == 0, response
