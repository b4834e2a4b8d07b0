"""Seeded text of the mini world: prompts that name a subject, and "natural" short reviews.

Two worlds share one grammar and one judge but not their words:

* ``"id"``  (in distribution): dishes at restaurants — "Review of the pasta at Luigi's:";
* ``"ood"`` (out of distribution): parts of hotels and trips, asked in other words —
  "How was the pool at the Seaview Hotel?".

A response is 1-4 short sentences. Opinion sentences put a sentiment word from VADER's lexicon
after an optional negation ("not", "wasn't") and an optional booster or dampener ("very",
"slightly"), sometimes in a contrast clause ("..., but the staff was rude."); the other sentences
are neutral facts ("We sat near the window."). Sentiment polarity is drawn 50/50, so the mix is
neutral on average, and, as in real text, most words carry no sentiment. Everything is drawn from
a ``random.Random`` seeded by the caller, so a seed gives the same text on every machine.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re

from sepo.errors import ConfigError
from sepo.world.words import WORD

WORLD_NAMES = ("id", "ood")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The words and templates of one world."""

    subjects: tuple[str, ...]
    places: tuple[str, ...]
    prompt_templates: tuple[str, ...]  # with {subject} and {place}
    aspects: tuple[str, ...]  # other things a review talks about
    neutral_sentences: tuple[str, ...]  # with {subject}, {be}, {aspect}, {aspect_be}, {other}, {number}, {day}, {month}
    opinion_verbs: tuple[str, ...]  # "tasted", "felt", ... (besides "was")
    others: tuple[str, ...]  # fillers for {other}


# Sentiment words, all in VADER's lexicon (checked in the tests), with similar mean |valence|.
POSITIVE = ("good", "great", "nice", "delicious", "fresh", "lovely", "excellent", "perfect", "pleasant",
            "friendly", "wonderful", "fine", "amazing", "enjoyable", "fantastic", "generous", "clean",
            "comfortable", "helpful", "charming")
NEGATIVE = ("bad", "awful", "terrible", "rude", "dirty", "boring", "disappointing", "horrible", "poor",
            "weak", "nasty", "unpleasant", "gross", "dull", "messy", "ugly", "noisy", "sad", "stupid",
            "lousy")
# Descriptions with no sentiment in VADER (they make the neutral part of the text).
NEUTRAL = ("spicy", "salty", "large", "small", "simple", "crispy", "thick", "quick", "plain", "busy",
           "quiet", "dark", "narrow", "cheap", "round", "hot", "wide", "tall")
NEGATIONS = ("not", "never")
NEGATED_COPULAS = {"was": ("wasn't", "was not", "was never"), "were": ("weren't", "were not", "were never")}
BOOSTERS = ("very", "really", "extremely", "quite", "so", "incredibly", "slightly", "somewhat")
POSITIVE_VERBS = ("liked", "loved", "enjoyed")
NEGATIVE_VERBS = ("hated", "disliked")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

ID = Vocabulary(
    subjects=("pasta", "soup", "pizza", "salad", "burger", "curry", "risotto", "steak", "bread", "dessert",
              "coffee", "noodles", "tacos", "chowder", "lasagna", "omelette", "pancakes", "dumplings", "ramen",
              "paella", "sandwich", "pie", "fish", "chicken", "rice", "fries", "cake", "tea", "stew", "waffles"),
    places=("Luigi's", "the Blue Door", "Rosa's Kitchen", "the corner cafe", "Golden Dragon", "the harbour bistro",
            "Maple Diner", "Casa Verde", "the Old Mill", "Sakura House", "the night market", "Tom's Grill",
            "the station canteen", "Bella Napoli", "the Red Lantern", "Chez Marie", "the food truck", "Spice Route",
            "the village pub", "Green Leaf", "the airport lounge", "Mama Lin's", "the rooftop bar", "Olive Tree"),
    prompt_templates=("Review of the {subject} at {place}:", "Write a short review of the {subject} at {place}.",
                      "What did you think of the {subject} at {place}?", "Your thoughts on the {subject} at {place}:",
                      "A few words about the {subject} at {place}:"),
    aspects=("sauce", "portion", "service", "waiter", "staff", "price", "table", "music", "plate", "menu", "kitchen",
             "dining room"),
    neutral_sentences=("We went there on a {day} evening.", "I ordered the {subject} with a glass of water.",
                       "The {subject} arrived after about {number} minutes.", "We sat near the {other}.",
                       "My friend ordered the same.", "It came with a side of bread.",
                       "The {aspect} {aspect_be} {neutral}.", "The {subject} {be} {neutral} and {neutral2}.",
                       "I had the {subject} for lunch.", "We paid at the counter."),
    opinion_verbs=("tasted", "looked", "seemed"),
    others=("window", "door", "bar", "kitchen", "garden", "counter", "entrance", "fireplace"),
)

OOD = Vocabulary(
    subjects=("room", "pool", "breakfast", "lobby", "view", "bed", "shower", "gym", "spa", "parking", "elevator",
              "balcony", "receptionist", "minibar", "wifi", "beach", "tour", "guide", "flight", "train"),
    places=("the Seaview Hotel", "Hotel Aurora", "the Grand Palace", "Pine Lodge", "the Harbor Inn", "Sunset Resort",
            "the Alpine Chalet", "City Central Hostel", "Lakeside Motel", "the Royal Suites", "Coral Bay Resort",
            "the Mountain Inn"),
    prompt_templates=("How was the {subject} at {place}?", "Describe the {subject} at {place} in a few sentences.",
                      "Tell me about the {subject} at {place}.", "Give your opinion of the {subject} at {place}:"),
    aspects=("check-in", "housekeeping", "hallway", "carpet", "towels", "lighting", "noise", "front desk",
             "air conditioning", "location"),
    neutral_sentences=("We stayed there for {number} nights in {month}.", "Our {subject} was on floor {number}.",
                       "We booked the {subject} through a travel agent.", "The {aspect} {aspect_be} {neutral}.",
                       "I used the {subject} every morning.", "The {subject} {be} {neutral} and {neutral2}.",
                       "We arrived late on a {day}.", "There was a {other} next to the {subject}."),
    opinion_verbs=("felt", "looked", "seemed"),
    others=("vending machine", "garden", "staircase", "fountain", "car park", "bus stop", "laundry", "terrace"),
)
MONTHS = ("January", "March", "May", "July", "September", "November")
_GRAMMAR_WORDS = ("the", "I", "but", "was", "were")  # the words the sentence builders below write themselves

VOCABULARIES = {"id": ID, "ood": OOD}


def known_words() -> frozenset[str]:
    """Every word the world's text can contain (both worlds, lower-cased): what the gold judge counts as language."""
    texts: list[str] = []
    for v in VOCABULARIES.values():
        for field in dataclasses.fields(v):
            texts.extend(re.sub(r"\{[a-z_]+\}", " ", t) for t in getattr(v, field.name))
    for group in (POSITIVE, NEGATIVE, NEUTRAL, NEGATIONS, BOOSTERS, POSITIVE_VERBS, NEGATIVE_VERBS, DAYS, MONTHS,
                  *NEGATED_COPULAS.values(), tuple(NEGATED_COPULAS), _GRAMMAR_WORDS):
        texts.extend(group)
    return frozenset(w.lower() for t in texts for w in WORD.findall(t))


def vocabulary(world: str) -> Vocabulary:
    if world not in VOCABULARIES:
        raise ConfigError(f"world = {world!r}: unknown; known worlds are {list(VOCABULARIES)}")
    return VOCABULARIES[world]


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------
def all_prompts(world: str) -> list[str]:
    """Every distinct prompt of a world (subject x place x template), in a fixed order."""
    v = vocabulary(world)
    return [t.format(subject=s, place=p) for s, p, t in itertools.product(v.subjects, v.places, v.prompt_templates)]


def prompt_capacity(world: str) -> int:
    """How many distinct prompts a world has."""
    v = vocabulary(world)
    return len(v.subjects) * len(v.places) * len(v.prompt_templates)


def sample_prompts(world: str, n: int, rng: random.Random) -> list[str]:
    """``n`` distinct prompts drawn without replacement; more than the world has is an error."""
    capacity = prompt_capacity(world)
    if not 0 <= n <= capacity:
        raise ConfigError(f"{n} distinct prompts asked of world {world!r}, which has {capacity}")
    return rng.sample(all_prompts(world), n)


def subject_of(world: str, prompt: str) -> str:
    """The subject a prompt of ``world`` names (the generator's own bookkeeping, not the judge's)."""
    for s in sorted(vocabulary(world).subjects, key=len, reverse=True):
        if f"the {s} at" in prompt:
            return s
    raise ConfigError(f"prompt {prompt!r} names no subject of world {world!r}")


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ResponseStyle:
    """How responses are drawn: sentence counts and the rates of each construction."""

    min_sentences: int = 1
    max_sentences: int = 4
    opinion_rate: float = 0.55  # share of sentences that carry sentiment
    negation_rate: float = 0.2
    booster_rate: float = 0.3
    contrast_rate: float = 0.25  # opinion sentences with a "but" clause of the other polarity
    mention_subject_rate: float = 0.9  # responses whose first sentence names the subject

    def __post_init__(self) -> None:
        if not 1 <= self.min_sentences <= self.max_sentences:
            raise ConfigError(f"ResponseStyle: need 1 <= min_sentences ({self.min_sentences}) <= "
                              f"max_sentences ({self.max_sentences}); a response cannot be empty")
        for name in ("opinion_rate", "negation_rate", "booster_rate", "contrast_rate", "mention_subject_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"ResponseStyle.{name} = {getattr(self, name)!r}: must be in [0, 1]")


def _copula(thing: str) -> str:
    """"were" for the plural nouns of the vocabularies ("noodles", "towels"), "was" otherwise."""
    return "were" if thing.endswith("s") else "was"


def _sentiment_phrase(rng: random.Random, style: ResponseStyle, positive: bool, thing: str) -> str:
    """``was [not] [very] <adjective>`` whose VADER polarity is ``positive`` (a negation flips the word)."""
    negated = rng.random() < style.negation_rate
    word = rng.choice(POSITIVE if positive != negated else NEGATIVE)
    booster = rng.choice(BOOSTERS) + " " if rng.random() < style.booster_rate else ""
    copula = _copula(thing)
    return f"{rng.choice(NEGATED_COPULAS[copula])} {booster}{word}" if negated else f"{copula} {booster}{word}"


def _opinion_sentence(rng: random.Random, v: Vocabulary, style: ResponseStyle, thing: str) -> str:
    positive = rng.random() < 0.5
    if rng.random() < style.contrast_rate:
        other = rng.choice(v.aspects)
        return (f"The {thing} {_sentiment_phrase(rng, style, positive, thing)}, "
                f"but the {other} {_sentiment_phrase(rng, style, not positive, other)}.")
    form = rng.random()
    if form < 0.2:
        verb = rng.choice(POSITIVE_VERBS if positive else NEGATIVE_VERBS)
        return f"I {verb} the {thing}."
    if form < 0.35:
        verb = rng.choice(v.opinion_verbs)
        word = rng.choice(POSITIVE if positive else NEGATIVE)
        return f"The {thing} {verb} {word}."
    return f"The {thing} {_sentiment_phrase(rng, style, positive, thing)}."


def _neutral_sentence(rng: random.Random, v: Vocabulary, subject: str) -> str:
    first, second = rng.sample(NEUTRAL, 2)
    aspect = rng.choice(v.aspects)
    return rng.choice(v.neutral_sentences).format(
        subject=subject, be=_copula(subject), aspect=aspect, aspect_be=_copula(aspect), other=rng.choice(v.others), number=rng.randint(2, 9),
        day=rng.choice(DAYS), month=rng.choice(MONTHS), neutral=first, neutral2=second)


def sample_response(world: str, prompt: str, rng: random.Random, style: ResponseStyle = ResponseStyle()) -> str:
    """One natural response to ``prompt``: 1-4 sentences, opinions on the subject and its surroundings."""
    v = vocabulary(world)
    subject = subject_of(world, prompt)
    n = rng.randint(style.min_sentences, style.max_sentences)
    sentences = []
    for i in range(n):
        if i == 0:
            thing = subject if rng.random() < style.mention_subject_rate else rng.choice(v.aspects)
            sentences.append(_opinion_sentence(rng, v, style, thing))
        elif rng.random() < style.opinion_rate:
            sentences.append(_opinion_sentence(rng, v, style, rng.choice((subject, *v.aspects))))
        else:
            sentences.append(_neutral_sentence(rng, v, subject))
    return " ".join(sentences)


def sample_corpus(world: str, n: int, rng: random.Random, prompts: list[str] | None = None,
                  style: ResponseStyle = ResponseStyle()) -> list[tuple[str, str]]:
    """``n`` (prompt, response) examples; prompts drawn with replacement from ``prompts`` (default: all)."""
    pool = prompts if prompts is not None else all_prompts(world)
    if n > 0 and not pool:
        raise ConfigError(f"world {world!r}: no prompt to draw {n} examples from")
    out = []
    for _ in range(n):
        prompt = rng.choice(pool)
        out.append((prompt, sample_response(world, prompt, rng, style)))
    return out
