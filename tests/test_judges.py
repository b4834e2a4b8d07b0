"""Judges: gold preferences by hand, LLM judges through a fake OpenAI-compatible client (no network)."""

import math

import pytest

from fake_openai import FakeClient, chat_completion
from sepo.errors import ConfigError, DataError
from sepo.judges import (
    AlpacaEvalJudge,
    ArenaHardJudge,
    GoldPairwiseJudge,
    MTBenchJudge,
    PairwiseJudge,
    SingleAnswerJudge,
    build_judge,
    parse_rating,
    parse_verdict,
)


class CountingGold:
    """Gold reward = number of times 'good' appears minus number of times 'bad' appears."""

    def rewards(self, prompts, responses):
        return [r.count("good") - r.count("bad") for r in responses]


def test_gold_judge_prefers_the_higher_reward_and_ties_at_equal_reward():
    judge = GoldPairwiseJudge(CountingGold())
    assert isinstance(judge, PairwiseJudge) and isinstance(judge, SingleAnswerJudge)
    prefs = judge.compare(["p"] * 4, ["good", "good good", "bad", "fine"], ["good good", "good", "bad", "ok"])
    assert prefs == [2.0, 1.0, 1.5, 1.5]
    assert judge.score(["p", "p"], ["good good", "bad"]) == [2.0, -1.0]
    tolerant = GoldPairwiseJudge(CountingGold(), tie_tolerance=1.0)
    assert tolerant.compare(["p"] * 2, ["good", "bad"], ["good good", "good good"]) == [1.5, 2.0]
    with pytest.raises(DataError, match="differ in length"):
        judge.compare(["p"], ["a", "b"], ["c", "d"])


@pytest.mark.parametrize("text,rating", [("Fine. Rating: [[7]]", 7.0), ("score [8.5] overall", 8.5),
                                         ("I would say seven", None), ("Rating: [[11]]", None), ("[[0]]", None)])
def test_parse_rating(text, rating):
    assert parse_rating(text) == rating


@pytest.mark.parametrize("text,expected", [
    ("My final verdict is: [[B>>A]]", ("B>>A", False)),
    ("... [[a=b]]", ("A=B", False)),
    ("no label here", (None, True)),
    ("[[A>B]] then later [[B>A]]", (None, False)),
    ("[[A>>>B]]", (None, False)),
])
def test_parse_verdict_follows_arena_hard(text, expected):
    assert parse_verdict(text) == expected


def test_llm_judges_need_a_key_up_front(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for name in ("alpaca_eval", "arena_hard", "mt_bench"):
        with pytest.raises(ConfigError, match=r"OPENAI_API_KEY.*judge='gold'"):
            build_judge(name)
    with pytest.raises(ConfigError, match="gold judge"):
        build_judge("gold")
    with pytest.raises(ConfigError, match="unknown judge"):
        build_judge("gpt4")


def test_arena_hard_two_games_weights_and_skips():
    # script: by (question, which answer is A) -> list of replies (a second reply answers the follow-up)
    script = {
        ("q1", "base"): ["[[B>>A]]"], ("q1", "model"): ["[[A>B]]"],        # model wins both: 2.0
        ("q2", "base"): ["[[A>B]]"], ("q2", "model"): ["[[A>>B]]"],        # 1 + (0*1 + 1*3) / 4 = 1.75
        ("q3", "base"): ["hmm", "still thinking"], ("q3", "model"): ["[[A=B]]"],  # game 1 unparseable: 1.5
        ("q4", "base"): ["[[A>B]] no, [[B>A]]"], ("q4", "model"): ["none", "none"],  # both unparseable: None
    }
    seen = {}

    def answer(kwargs):
        user = kwargs["messages"][1]["content"]
        question = user.split("\n")[1]
        first_answer = user.split("<|The Start of Assistant A's Answer|>\n")[1].split("\n")[0]
        key = (question, first_answer)
        seen[key] = seen.get(key, 0) + 1
        return script[key][seen[key] - 1]

    client = FakeClient(answer)
    judge = ArenaHardJudge(client=client)
    out = judge.annotate(["q1", "q2", "q3", "q4"], ["base"] * 4, ["model"] * 4)
    assert [a["preference"] for a in out] == [2.0, 1.75, 1.5, None]
    assert out[2]["verdicts"] == [None, "A=B"]
    assert client.calls[0]["model"] == "gpt-4-1106-preview" and client.calls[0]["temperature"] == 0.0
    assert client.calls[0]["messages"][0]["content"].startswith("Please act as an impartial judge")
    follow_up = [c for c in client.calls if len(c["messages"]) == 4]
    assert len(follow_up) == 2  # q3 game 1 and q4 game 2 asked to finish; q4 game 1 had two labels: no retry
    assert follow_up[0]["messages"][-1]["content"].startswith("continue your judgment")


def test_mt_bench_grades_both_turns_with_the_official_prompts():
    def answer(kwargs):
        user = kwargs["messages"][1]["content"]
        if "UNPARSEABLE" in user:
            return "I refuse to rate."
        return "Rating: [[9]]" if "REF-ANSWER" in user else "Rating: [[6]]"

    client = FakeClient(answer)
    judge = MTBenchJudge(client=client)
    questions = [{"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Shorter."]},
                 {"question_id": 111, "category": "math", "turns": ["1+1?", "2+2?"]}]
    rows = judge.grade_questions(questions, [["a poem", "UNPARSEABLE"], ["2", "4"]], {111: ["REF-ANSWER 2", "REF 4"]})
    assert [(r["question_id"], r["turn"], r["judge_prompt"], r["score"]) for r in rows] == [
        (81, 1, "single-v1", 6.0), (81, 2, "single-v1-multi-turn", None),
        (111, 1, "single-math-v1", 9.0), (111, 2, "single-math-v1-multi-turn", 9.0)]
    assert "[Question]\nWrite a poem." in client.calls[0]["messages"][1]["content"]
    assert client.calls[0]["model"] == "gpt-4" and client.calls[0]["temperature"] == 0.0
    assert judge.score(["q"], ["UNPARSEABLE"]) == [None]
    with pytest.raises(DataError, match="needs a reference answer"):
        judge.grade_questions(questions[1:], [["2", "4"]], {})


def test_alpaca_eval_judge_reads_the_logprob_preference_and_skips_unparseable():
    """The judge names 'm' (first output in the prompt) or 'M'; GOOD outputs win with probability 0.8."""

    def answer(kwargs):
        user = kwargs["messages"][-1]["content"]
        if "BROKEN" in user:
            return chat_completion("zzz", {"zzz": -0.1})
        winner = "m" if user.find('"m"') < user.find("GOOD") < user.find('"M"') else "M"
        loser = "M" if winner == "m" else "m"
        return chat_completion(winner, {winner: math.log(0.8), loser: math.log(0.2)})

    client = FakeClient(answer)
    judge = AlpacaEvalJudge(client=client, model="my-judge")
    prefs = judge.compare(["q1", "q2", "q3", "q1"], ["bad", "GOOD", "x BROKEN", "bad"], ["GOOD", "bad", "y", "GOOD"])
    assert prefs[0] == pytest.approx(1.8) and prefs[1] == pytest.approx(1.2) and prefs[2] is None
    assert prefs[3] == pytest.approx(1.8)
    assert len(client.calls) == 3  # the repeated row is judged once
    assert client.calls[0]["model"] == "my-judge" and client.calls[0]["max_tokens"] == 1 and client.calls[0]["logprobs"]


def test_gold_judge_wraps_the_world_gold_reward():
    world_judge = pytest.importorskip("sepo.world.judge")
    judge = build_judge("gold", gold=world_judge.GoldJudge())
    prompts = ["review of the soup :"] * 2
    assert judge.compare(prompts, ["the soup was bad .", "the soup was good ."],
                         ["the soup was very good .", "the soup was good ."]) == [2.0, 1.5]
