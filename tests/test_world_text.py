"""Text of the mini world: seeded, natural (lexicon words, mostly neutral), two disjoint worlds."""

from __future__ import annotations

import random
import statistics

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from sepo.errors import ConfigError
from sepo.world import text
from sepo.world.judge import GoldJudge, words


def test_sentiment_words_are_in_vader_lexicon_with_their_sign():
    lexicon = SentimentIntensityAnalyzer().lexicon
    assert all(lexicon[w] > 0 for w in text.POSITIVE)
    assert all(lexicon[w] < 0 for w in text.NEGATIVE)
    assert not [w for w in text.NEUTRAL if w in lexicon]


def test_same_seed_same_text_and_prompts_name_their_subject():
    a = text.sample_corpus("id", 50, random.Random(3))
    b = text.sample_corpus("id", 50, random.Random(3))
    assert a == b
    assert a != text.sample_corpus("id", 50, random.Random(4))
    for prompt, response in a:
        assert text.subject_of("id", prompt) in prompt
        assert 1 <= response.count(".") <= 4 and response.strip()


def test_worlds_differ_in_subjects_and_prompt_wording():
    id_prompts, ood_prompts = set(text.all_prompts("id")), set(text.all_prompts("ood"))
    assert len(id_prompts) == text.prompt_capacity("id") and not id_prompts & ood_prompts
    assert not set(text.ID.subjects) & set(text.OOD.subjects)
    assert not {t.split("{")[0] for t in text.ID.prompt_templates} & {t.split("{")[0] for t in text.OOD.prompt_templates}


@pytest.mark.parametrize("world", text.WORLD_NAMES)
def test_natural_responses_are_neutral_on_average_and_mostly_neutral_words(world):
    judge = GoldJudge()
    corpus = text.sample_corpus(world, 400, random.Random(0))
    rewards = [judge.reward(p, r) for p, r in corpus]
    assert abs(statistics.mean(rewards)) < 0.1 and statistics.pstdev(rewards) > 0.3
    sentiment_words = set(text.POSITIVE + text.NEGATIVE)
    all_words = [r[s:e].lower() for _, r in corpus for s, e in words(r)]
    assert sum(w in sentiment_words for w in all_words) / len(all_words) < 0.2


def test_impossible_requests_fail():
    with pytest.raises(ConfigError, match="distinct prompts"):
        text.sample_prompts("id", text.prompt_capacity("id") + 1, random.Random(0))
    with pytest.raises(ConfigError, match="unknown"):
        text.all_prompts("mars")
    with pytest.raises(ConfigError, match="cannot be empty"):
        text.ResponseStyle(min_sentences=0)


def test_text_does_not_import_the_judge():
    """The text generator and the judge share the word pattern through sepo.world.words, not each other."""
    import subprocess
    import sys

    code = "import sys, sepo.world.text; sepo.world.text.known_words(); print('sepo.world.judge' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert text.WORD is words.__globals__["WORD"]
