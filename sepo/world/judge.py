"""The mini world's gold judge: VADER sentiment plus small penalties for degenerate text.

The gold reward of a response ``y`` to a prompt ``x`` is::

    R(x, y) = compound(y)                                   # VADER, in [-1, 1]
              - off_subject_penalty * [y names no content word of x]
              - repeat_weight * max(0, repeated(y) - repeat_allowance)
              - overrun_weight * max(0, n_words(y) - max_words) / max_words
              - min(1, junk_weight * junk(y))

* ``compound`` is VADER's normalised score (Hutto & Gilbert 2014): a lexicon of ~7,500 English
  words rated by people, with rules for negation ("not good"), boosters ("very good") and
  contrast ("bad but fine": words before "but" count half, words after it 1.5 times).
* **off subject**: the prompt's content words are its words minus :data:`PROMPT_STOPWORDS`
  (function words and request words such as "review", "thoughts"); a response that mentions none
  of them ignores the question.
* **repetition**: ``repeated(y) = 1 - distinct / total`` over the response's content words
  (stopwords left out); natural reviews repeat a little (the subject, "good"), so only the part
  above ``repeat_allowance`` is penalised. "great great great great" is penalised heavily.
* **overrun**: words beyond ``max_words`` (natural responses are 1-4 short sentences).
* **junk**: the number of the response's whitespace-separated chunks that are not language: a chunk
  with characters other than letters, digits, apostrophes, hyphens and ordinary punctuation, or with
  a word the world's language does not have (:func:`sepo.world.text.known_words`, VADER's lexicon and
  the stopwords). Each costs ``junk_weight``, 1 at most in all. A count, not a share, so that removing
  a clean word changes nothing (its credit stays 0). A policy that unlearns how to end a sentence and
  emits byte soup sprinkled with sentiment words ("I liked the�ffee�ruigi lovely") would otherwise
  keep VADER's score.

Without these terms VADER alone is maximised by a pile of positive words, and a policy pushed
too far could never *lose* gold reward; with them over-optimisation can show.

**Gold per-token credit.** A word's credit is the leave-one-word-out change of the gold reward,
``R(x, y) - R(x, y without that word)`` (the word and one adjacent space removed). Credits are
computed per word (maximal runs of letters, digits, apostrophes and hyphens); punctuation is not
a word. :func:`credit_to_tokens` carries them onto a tokenizer's tokens by character offsets.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from functools import cached_property

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from sepo.errors import ConfigError, DataError
from sepo.world.text import known_words
from sepo.world.words import WORD, words

# Words that never make a prompt's subject nor count as content: English function words and the
# request words prompts are built from.
STOPWORDS = frozenset(
    """a an the and or but of at in on to for with from by as is was were be been are am it its it's this that
    these those there here i me my we our you your he she they them their his her what which who how did do does
    had has have so very really not no just then than too also about after before while when where all some any
    one two three four five more most much many only still again once""".split()
)
PROMPT_STOPWORDS = STOPWORDS | frozenset(
    """review write short brief tell describe give opinion opinions thoughts think thought say please
    quick few words rate rating describing sentence sentences""".split()
)


CLEAN_CHUNK = re.compile(r"^[\"'(]*(?:[A-Za-z0-9]+(?:['\-][A-Za-z0-9]+)*)?[.,!?;:\"')]*$")


def content_words(text: str, stopwords: frozenset[str] = STOPWORDS) -> list[str]:
    """Lower-cased words of ``text`` that are not stopwords."""
    return [w for w in (m.group().lower() for m in WORD.finditer(text)) if w not in stopwords]


def remove_span(text: str, start: int, end: int) -> str:
    """``text`` without ``text[start:end]`` and one adjacent space (so no double space is left)."""
    if end < len(text) and text[end] == " ":
        end += 1
    elif start > 0 and text[start - 1] == " ":
        start -= 1
    return text[:start] + text[end:]


@dataclasses.dataclass(frozen=True)
class GoldJudge:
    """Gold reward and gold per-word credit of the mini world (weights of the degeneracy terms)."""

    off_subject_penalty: float = 0.5
    repeat_weight: float = 2.0
    repeat_allowance: float = 0.3
    overrun_weight: float = 0.5
    max_words: int = 48
    junk_weight: float = 0.25

    def __post_init__(self) -> None:
        for name in ("off_subject_penalty", "repeat_weight", "overrun_weight", "junk_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"GoldJudge.{name} = {value!r}: must be a finite number >= 0")
        if not 0.0 <= self.repeat_allowance < 1.0:
            raise ConfigError(f"GoldJudge.repeat_allowance = {self.repeat_allowance!r}: must be in [0, 1)")
        if self.max_words < 1:
            raise ConfigError(f"GoldJudge.max_words = {self.max_words!r}: must be >= 1")

    @cached_property
    def _vader(self) -> SentimentIntensityAnalyzer:
        return SentimentIntensityAnalyzer()

    @cached_property
    def _known(self) -> frozenset[str]:
        return known_words() | STOPWORDS | frozenset(w.lower() for w in self._vader.lexicon)

    def junk(self, response: str) -> int:
        """How many whitespace-separated chunks are not clean words of the world's language."""
        return sum(1 for c in response.split() if not CLEAN_CHUNK.match(c)
                   or any(w.lower() not in self._known and not w.isdigit() for w in WORD.findall(c)))

    # --- the reward and its terms -----------------------------------------------------------
    def terms(self, prompt: str, response: str) -> dict[str, float]:
        """The parts of the gold reward: ``sentiment`` and the four (non-negative) penalties."""
        sentiment = self._vader.polarity_scores(response)["compound"] if response.strip() else 0.0
        subject = set(content_words(prompt, PROMPT_STOPWORDS))
        said = content_words(response)
        off_subject = float(bool(subject) and not subject.intersection(said))
        repeated = 1.0 - len(set(said)) / len(said) if said else 0.0
        n_words = len(words(response))
        return {
            "sentiment": sentiment,
            "off_subject": self.off_subject_penalty * off_subject,
            "repetition": self.repeat_weight * max(0.0, repeated - self.repeat_allowance),
            "overrun": self.overrun_weight * max(0, n_words - self.max_words) / self.max_words,
            "junk": min(1.0, self.junk_weight * self.junk(response)),
        }

    def reward(self, prompt: str, response: str) -> float:
        """Gold reward of one response (see the module docstring)."""
        t = self.terms(prompt, response)
        return t["sentiment"] - t["off_subject"] - t["repetition"] - t["overrun"] - t["junk"]

    def rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Gold rewards of aligned prompts and responses."""
        if len(prompts) != len(responses):
            raise DataError(f"GoldJudge.rewards: {len(prompts)} prompts for {len(responses)} responses")
        return [self.reward(p, r) for p, r in zip(prompts, responses)]

    # --- leave-one-word-out credit ----------------------------------------------------------
    def word_credit(self, prompt: str, response: str) -> list[tuple[int, int, float]]:
        """``(start, end, credit)`` of each word of ``response``; credit = R(full) - R(without the word)."""
        full = self.reward(prompt, response)
        return [(s, e, full - self.reward(prompt, remove_span(response, s, e))) for s, e in words(response)]


def credit_to_tokens(word_spans_and_credits: Sequence[Sequence[float]],
                     token_offsets: Sequence[Sequence[int]]) -> list[float]:
    """Gold credit of each token, from word credits and the tokens' character offsets.

    A token overlaps a word when their character spans intersect. Each word's credit is split
    **evenly** among the tokens that overlap it (a word cut into 3 sub-word tokens gives each a
    third), and a token's credit is the sum of the shares it receives, so the token credits of a
    response add up to its word credits. Tokens that overlap no word (punctuation, spaces, EOS with
    its empty span ``(n, n)``) get 0. Offsets may include a leading space (byte-level BPE): only
    the overlap with the word counts.
    """
    credits = [0.0] * len(token_offsets)
    for start, end, credit in word_spans_and_credits:
        start, end = int(start), int(end)
        covering = [i for i, (ts, te) in enumerate(token_offsets) if max(ts, start) < min(te, end)]
        for i in covering:
            credits[i] += float(credit) / len(covering)
    return credits
