"""Judges behind one interface: the mini world's gold judge (offline) and LLM judges (paper tier).

Two kinds of judge:

* a **pairwise** judge has ``compare(instructions, outputs_1, outputs_2) -> list[float | None]``: one
  preference per row in AlpacaEval's convention, in [1, 2], where 1 means ``outputs_1`` (the baseline)
  is better, 2 means ``outputs_2`` (the evaluated model) is better and 1.5 is a tie;
* a **single-answer** judge has ``score(instructions, outputs) -> list[float | None]``.

``None`` marks a judge answer that could not be parsed. Nothing is dropped here: callers count the
``None`` rows and report them as skips (:func:`sepo.evaluate.win_rate`). LLM judges also have
``annotate(...) -> list[dict]`` which keeps the judge's raw text beside each preference.

LLM judges call an OpenAI-compatible chat API (``base_url``; the key from ``api_key`` or the
environment variable ``OPENAI_API_KEY``). Without a key they fail in their constructor, before any
generation or file writing, with one message saying what is needed. Tests pass a ``client`` object
with the ``client.chat.completions.create(...)`` method of the ``openai`` package instead.

* :class:`GoldPairwiseJudge`: the mini world's gold reward (``GoldJudge.rewards``); higher reward wins.
* :class:`AlpacaEvalJudge`: AlpacaEval 2's annotator (``alpaca_eval.annotators.PairwiseAnnotator`` with
  the ``weighted_alpaca_eval_gpt4_turbo`` config: its prompt, random output order, logprob preference).
* :class:`MTBenchJudge`: MT-Bench single-answer grading with FastChat's official judge prompts, 1-10, both
  turns (the answers come from :func:`sepo.evaluate.mt_bench_answers`).
* :class:`ArenaHardJudge`: Arena-Hard v0.1 pairwise judging, two games with the answer order swapped.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sepo.benchmarks import load_arena_hard_judge_config, load_mt_bench_judge_prompts
from sepo.errors import ConfigError, DataError

API_KEY_ENV = "OPENAI_API_KEY"
JUDGES = ("gold", "alpaca_eval", "arena_hard", "mt_bench")


@runtime_checkable
class PairwiseJudge(Protocol):
    name: str

    def compare(self, instructions: Sequence[str], outputs_1: Sequence[str], outputs_2: Sequence[str]) -> list[float | None]:
        """Preference per row in [1, 2] (2: ``outputs_2`` wins, 1.5: tie), ``None`` if unparseable."""


@runtime_checkable
class SingleAnswerJudge(Protocol):
    name: str

    def score(self, instructions: Sequence[str], outputs: Sequence[str]) -> list[float | None]:
        """Score per row (higher is better), ``None`` if unparseable."""


def _check_lengths(**columns: Sequence) -> int:
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(f"judge inputs differ in length: {lengths}")
    return next(iter(lengths.values()))


def is_missing(value: Any) -> bool:
    """True for a skipped judgement (``None`` or NaN)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


# --------------------------------------------------------------------------------------------
# Gold judge (offline)
# --------------------------------------------------------------------------------------------
class GoldPairwiseJudge:
    """Pairwise and single-answer judge from a gold reward ``gold.rewards(prompts, responses)``.

    Preference 2 when the evaluated output's reward exceeds the baseline's by more than
    ``tie_tolerance``, 1 when it is lower by more than that, 1.5 otherwise.
    """

    def __init__(self, gold, tie_tolerance: float = 0.0, name: str = "gold"):
        if not (tie_tolerance >= 0):
            raise ConfigError(f"tie_tolerance = {tie_tolerance!r}: must be >= 0")
        self.gold = gold
        self.tie_tolerance = tie_tolerance
        self.name = name

    def score(self, instructions: Sequence[str], outputs: Sequence[str]) -> list[float | None]:
        n = _check_lengths(instructions=instructions, outputs=outputs)
        rewards = [float(r) for r in self.gold.rewards(list(instructions), list(outputs))]
        if len(rewards) != n:
            raise DataError(f"gold judge returned {len(rewards)} rewards for {n} outputs")
        return rewards

    def compare(self, instructions: Sequence[str], outputs_1: Sequence[str], outputs_2: Sequence[str]) -> list[float | None]:
        _check_lengths(instructions=instructions, outputs_1=outputs_1, outputs_2=outputs_2)
        rewards_1 = self.score(instructions, outputs_1)
        rewards_2 = self.score(instructions, outputs_2)
        return [self._preference(r1, r2) for r1, r2 in zip(rewards_1, rewards_2)]

    def _preference(self, reward_1: float, reward_2: float) -> float | None:
        if math.isnan(reward_1) or math.isnan(reward_2):
            return None
        if reward_2 - reward_1 > self.tie_tolerance:
            return 2.0
        if reward_1 - reward_2 > self.tie_tolerance:
            return 1.0
        return 1.5


# --------------------------------------------------------------------------------------------
# OpenAI-compatible client
# --------------------------------------------------------------------------------------------
def missing_key_message(judge: str, api_key_env: str = API_KEY_ENV) -> str:
    return (
        f"the {judge!r} judge calls an LLM through an OpenAI-compatible API and no API key is configured: "
        f"set the environment variable {api_key_env} (and base_url for a server other than OpenAI's), "
        f"or evaluate offline with judge='gold'. Nothing was generated or written."
    )


def resolve_client(judge: str, client=None, base_url: str | None = None, api_key: str | None = None,
                   api_key_env: str = API_KEY_ENV):
    """The chat client of an LLM judge: ``client`` as given, else ``openai.OpenAI`` with a key, else an error."""
    if client is not None:
        return client
    key = api_key or os.environ.get(api_key_env)
    if not key:
        raise ConfigError(missing_key_message(judge, api_key_env))
    from openai import OpenAI

    return OpenAI(base_url=base_url or None, api_key=key)


def chat(client, model: str, messages: list[dict[str, str]], **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """One chat completion: the answer's text and the first choice as a dict (``text`` added)."""
    response = client.chat.completions.create(model=model, messages=messages, **kwargs)
    choice = response.choices[0]
    text = choice.message.content or ""
    record = choice.model_dump() if hasattr(choice, "model_dump") else {}
    record["text"] = text
    return text, record


@contextlib.contextmanager
def _quiet_alpaca_eval_import():
    """alpaca_eval imports pkg_resources, which warns at import; keep notebooks clean."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        yield


def _alpaca_eval_completions(prompts: Sequence[str], model_name: str, *, client, **decoding_kwargs) -> dict[str, list]:
    """``fn_completions`` for alpaca_eval annotators that sends each ChatML prompt through ``client``."""
    with _quiet_alpaca_eval_import():
        from alpaca_eval.utils import prompt_to_chatml

    texts, records = [], []
    for prompt in prompts:
        text, record = chat(client, model_name, prompt_to_chatml(prompt.strip()), **decoding_kwargs)
        texts.append(text)
        records.append(record)
    n = len(prompts)
    return dict(completions=texts, completions_all=records, price_per_example=[float("nan")] * n,
                time_per_example=[float("nan")] * n)


# --------------------------------------------------------------------------------------------
# AlpacaEval 2
# --------------------------------------------------------------------------------------------
class AlpacaEvalJudge:
    """AlpacaEval 2's pairwise annotator, its completions sent through an OpenAI-compatible client.

    ``annotators_config`` names an alpaca_eval evaluator config (default: the AlpacaEval 2.0 judge
    ``weighted_alpaca_eval_gpt4_turbo``, GPT-4 Turbo reading the log-probs of its one-token answer);
    ``model`` overrides the judge model of that config. Rows whose completion cannot be parsed come back
    with preference ``None``. No annotation cache is written.
    """

    def __init__(self, *, annotators_config: str = "weighted_alpaca_eval_gpt4_turbo", model: str | None = None,
                 client=None, base_url: str | None = None, api_key: str | None = None,
                 api_key_env: str = API_KEY_ENV, seed: int = 0):
        self.client = resolve_client("alpaca_eval", client, base_url, api_key, api_key_env)
        with _quiet_alpaca_eval_import():
            from alpaca_eval.annotators import PairwiseAnnotator

        self.annotator = PairwiseAnnotator(annotators_config=annotators_config, caching_path=None, seed=seed)
        for single in self.annotator.annotators.values():
            if model:
                single.completions_kwargs["model_name"] = model
            single.fn_completions = partial(_alpaca_eval_completions, client=self.client)
        self.name = annotators_config

    def annotate(self, instructions: Sequence[str], outputs_1: Sequence[str], outputs_2: Sequence[str]) -> list[dict]:
        _check_lengths(instructions=instructions, outputs_1=outputs_1, outputs_2=outputs_2)
        keys = list(zip(instructions, outputs_1, outputs_2))
        unique = list(dict.fromkeys(keys))  # the annotator merges on these columns: no duplicate rows
        rows = [{"instruction": i, "output_1": a, "output_2": b} for i, a, b in unique]
        annotated = self.annotator.annotate_pairs(rows) if rows else []
        by_key = {(r["instruction"], r["output_1"], r["output_2"]): r for r in annotated}
        out = []
        for key in keys:
            row = by_key.get(key, {})
            preference = row.get("preference")
            out.append({
                "preference": None if is_missing(preference) else float(preference),
                "raw_completion": _as_text(row.get("preference_raw_completion")),
            })
        return out

    def compare(self, instructions, outputs_1, outputs_2) -> list[float | None]:
        return [a["preference"] for a in self.annotate(instructions, outputs_1, outputs_2)]


def _as_text(raw: Any) -> str | None:
    if isinstance(raw, dict):
        return raw.get("text")
    return None if is_missing(raw) else str(raw)


# --------------------------------------------------------------------------------------------
# MT-Bench
# --------------------------------------------------------------------------------------------
RATING_PATTERNS = (re.compile(r"\[\[(\d+\.?\d*)\]\]"), re.compile(r"\[(\d+\.?\d*)\]"))
NEED_REFERENCE_CATEGORIES = ("math", "reasoning", "coding")


def parse_rating(judgment: str, low: float = 1.0, high: float = 10.0) -> float | None:
    """MT-Bench's ``[[rating]]`` (FastChat also accepts ``[rating]``); ``None`` if absent or out of range."""
    for pattern in RATING_PATTERNS:
        match = pattern.search(judgment)
        if match:
            rating = float(match.group(1))
            return rating if low <= rating <= high else None
    return None


class MTBenchJudge:
    """MT-Bench single-answer grading (1-10) with FastChat's official GPT-4 judge prompts.

    Questions of the math, reasoning and coding categories are graded against GPT-4 reference answers
    (``single-math-v1`` prompts); the second turn is graded on the whole conversation
    (``*-multi-turn`` prompts). FastChat's settings: temperature 0, at most 2048 tokens.
    """

    name = "mt_bench"

    def __init__(self, *, model: str = "gpt-4", client=None, base_url: str | None = None, api_key: str | None = None,
                 api_key_env: str = API_KEY_ENV, max_tokens: int = 2048, benchmark_root: str | Path | None = None):
        self.client = resolve_client("mt_bench", client, base_url, api_key, api_key_env)
        self.model = model
        self.max_tokens = max_tokens
        self.prompts = load_mt_bench_judge_prompts(benchmark_root)

    def _grade(self, prompt_name: str, **fields: str) -> dict[str, Any]:
        prompt = self.prompts[prompt_name]
        messages = [{"role": "system", "content": prompt["system_prompt"]},
                    {"role": "user", "content": prompt["prompt_template"].format(**fields)}]
        text, _ = chat(self.client, self.model, messages, temperature=0.0, max_tokens=self.max_tokens)
        return {"score": parse_rating(text), "judgment": text, "judge_prompt": prompt_name}

    def annotate(self, instructions: Sequence[str], outputs: Sequence[str],
                 references: Sequence[str | None] | None = None) -> list[dict[str, Any]]:
        """Single-turn grading; a row with a reference answer uses the math prompt."""
        references = list(references) if references is not None else [None] * len(instructions)
        _check_lengths(instructions=instructions, outputs=outputs, references=references)
        out = []
        for question, answer, reference in zip(instructions, outputs, references):
            if reference is None:
                out.append(self._grade("single-v1", question=question, answer=answer))
            else:
                out.append(self._grade("single-math-v1", question=question, answer=answer, ref_answer_1=reference))
        return out

    def score(self, instructions, outputs, references=None) -> list[float | None]:
        return [a["score"] for a in self.annotate(instructions, outputs, references)]

    def grade_questions(self, questions: Sequence[dict], answers: Sequence[Sequence[str]],
                        reference_answers: dict[int, list[str]]) -> list[dict[str, Any]]:
        """Grade both turns of each MT-Bench question: one row per (question, turn) with its score."""
        _check_lengths(questions=questions, answers=answers)
        rows = []
        for question, answer in zip(questions, answers):
            qid, category = question["question_id"], question["category"]
            if len(answer) != 2:
                raise DataError(f"question {qid}: {len(answer)} answers, MT-Bench needs one per turn (2)")
            fields = {"question_1": question["turns"][0], "question_2": question["turns"][1],
                      "answer_1": answer[0], "answer_2": answer[1]}
            math_prompt = category in NEED_REFERENCE_CATEGORIES
            if math_prompt:
                if qid not in reference_answers:
                    raise DataError(f"question {qid} ({category}) needs a reference answer and has none")
                fields["ref_answer_1"], fields["ref_answer_2"] = reference_answers[qid]
            first = self._grade("single-math-v1" if math_prompt else "single-v1", question=fields["question_1"],
                                answer=answer[0], **({"ref_answer_1": fields["ref_answer_1"]} if math_prompt else {}))
            second = self._grade("single-math-v1-multi-turn" if math_prompt else "single-v1-multi-turn", **fields)
            for turn, graded in ((1, first), (2, second)):
                rows.append({"question_id": qid, "category": category, "turn": turn, **graded})
        return rows


# --------------------------------------------------------------------------------------------
# Arena-Hard
# --------------------------------------------------------------------------------------------
# Score of assistant B in one game, by verdict label; ">>" verdicts weigh 3 (Arena-Hard's default weight).
_B_SCORE = {"A>>B": (0.0, 3), "A>B": (0.0, 1), "A=B": (0.5, 1), "B=A": (0.5, 1), "B>A": (1.0, 1), "B>>A": (1.0, 3),
            "A<B": (1.0, 1), "A<<B": (1.0, 3), "B<A": (0.0, 1), "B<<A": (0.0, 3)}


def parse_verdict(judgment: str, pattern: str = r"\[\[([AB<>=]+)\]\]") -> tuple[str | None, bool]:
    """Arena-Hard's verdict parsing: ``(label, try_again)``.

    One distinct ``[[...]]`` label: that label. None: ``(None, True)``, the judge is asked to finish.
    Several distinct labels: ``(None, False)``, unparseable. A label outside the five verdicts is unparseable.
    """
    matches = [m for m in re.findall(pattern, judgment.upper()) if m != ""]
    if not matches:
        return None, True
    if len(set(matches)) > 1:
        return None, False
    label = matches[0].strip("\n")
    return (label if label in _B_SCORE else None), False


class ArenaHardJudge:
    """Arena-Hard v0.1 pairwise judge (official system prompt and template, ``data/benchmarks``).

    Each row is judged twice, baseline as assistant A then as assistant B; ``verdicts`` keeps both labels.
    Each game gives the evaluated model a score (1 win, 0.5 tie, 0 loss) and a weight (3 for a ``>>``
    verdict, else 1); the per-row ``preference`` is ``1 + weighted mean`` over the parseable games, ``None``
    if neither game could be parsed. The official Arena-Hard score is not a mean of these: it is the
    Bradley-Terry fit on the games' battles with bootstrap intervals, :func:`sepo.evaluate.arena_hard_score`.
    """

    name = "arena_hard"

    def __init__(self, *, model: str | None = None, client=None, base_url: str | None = None,
                 api_key: str | None = None, api_key_env: str = API_KEY_ENV, benchmark_root: str | Path | None = None):
        self.client = resolve_client("arena_hard", client, base_url, api_key, api_key_env)
        self.config = load_arena_hard_judge_config(benchmark_root)
        self.model = model or self.config["judge_model"]

    def _game(self, question: str, answer_a: str, answer_b: str) -> tuple[str | None, str]:
        cfg = self.config
        user = cfg["prompt_template"].format(question_1=question, answer_1=answer_a, answer_2=answer_b)
        messages = [{"role": "system", "content": cfg["system_prompt"]}, {"role": "user", "content": user}]
        judgment = ""
        label = None
        for _ in range(cfg["number_of_judgment_attempts"]):
            text, _ = chat(self.client, self.model, messages, temperature=float(cfg["temperature"]),
                           max_tokens=cfg["max_tokens"])
            judgment += "\n" + text
            label, try_again = parse_verdict(judgment, cfg["regex_pattern"])
            if not try_again:
                break
            messages = messages + [{"role": "assistant", "content": text},
                                   {"role": "user", "content": cfg["continue_prompt"]}]
        return label, judgment

    def annotate(self, instructions: Sequence[str], outputs_1: Sequence[str], outputs_2: Sequence[str]) -> list[dict]:
        _check_lengths(instructions=instructions, outputs_1=outputs_1, outputs_2=outputs_2)
        out = []
        for question, baseline, answer in zip(instructions, outputs_1, outputs_2):
            label_1, text_1 = self._game(question, baseline, answer)  # the model is B
            label_2, text_2 = self._game(question, answer, baseline)  # the model is A
            games = []
            if label_1 is not None:
                games.append(_B_SCORE[label_1])
            if label_2 is not None:
                score_as_b, weight = _B_SCORE[label_2]
                games.append((1.0 - score_as_b, weight))
            preference = 1.0 + sum(s * w for s, w in games) / sum(w for _, w in games) if games else None
            out.append({"preference": preference, "verdicts": [label_1, label_2], "raw_completion": [text_1, text_2]})
        return out

    def compare(self, instructions, outputs_1, outputs_2) -> list[float | None]:
        return [a["preference"] for a in self.annotate(instructions, outputs_1, outputs_2)]


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------
def build_judge(name: str, *, gold=None, model: str | None = None, client=None, base_url: str | None = None,
                api_key_env: str = API_KEY_ENV, seed: int = 0):
    """A judge by name (:data:`JUDGES`). ``gold`` is the world's gold judge, needed for ``gold`` only."""
    if name == "gold":
        if gold is None:
            raise ConfigError("judge 'gold' needs the mini world's gold judge (GoldJudge)")
        return GoldPairwiseJudge(gold)
    llm = dict(client=client, base_url=base_url, api_key_env=api_key_env)
    if name == "alpaca_eval":
        return AlpacaEvalJudge(model=model, seed=seed, **llm)
    if name == "arena_hard":
        return ArenaHardJudge(model=model, **llm)
    if name == "mt_bench":
        return MTBenchJudge(model=model or "gpt-4", **llm)
    raise ConfigError(f"unknown judge {name!r}; known: {list(JUDGES)}")
