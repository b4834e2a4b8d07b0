"""Evaluation stage: sample outputs, judge them, win rates with standard errors, KL to the reference.

One run evaluates a trained policy against (a) the SFT/reference model it started from and (b) an
optional fixed baseline given as an outputs file. Everything is in AlpacaEval's layout:

* outputs: ``{"instruction", "output", "generator", "dataset", "index", "sample"}`` per sampled output;
* annotations: ``{"instruction", "output_1", "output_2", "generator_1", "generator_2", "index",
  "preference", ...}`` with ``output_1`` the baseline and ``preference`` 2 when ``output_2`` (the
  evaluated model) wins, 1.5 for a tie, ``None`` when the judge's answer could not be parsed.

Win rates come from ``alpaca_eval.metrics.get_winrate`` (mean of ``preference - 1``, in percent);
unparseable judgements are counted and reported as ``n_skipped``, never dropped silently. With
several samples per prompt the samples of one prompt are not independent, so ``standard_error`` is
taken over prompts (the per-prompt mean preference), and ``get_winrate``'s own, which treats every row
as independent, is kept as ``standard_error_rows``. The length-controlled win rate (AlpacaEval 2) is computed only on AlpacaEval's 805
instructions, in their original order, from a local copy of AlpacaEval's ``df_gamed.csv``; an official
AlpacaEval annotation file without ``index`` is read in AlpacaEval's order, its instructions checked.

**Arena-Hard** is scored as arena-hard-auto's ``show_result.py`` does: every parseable game is a battle
against the baseline (a ``>>`` verdict counts 3 times), Bradley-Terry is fitted by logistic regression, the
score is the predicted win rate against the baseline (which scores 50%), and its 95% interval comes from
seeded bootstrap rounds over the battles.

**MT-Bench** is run as FastChat's ``llm_judge`` does: both turns are generated, the second question
asked after the model's own first answer (:func:`mt_bench_answers`), each turn graded 1-10 by the
single-answer judge, with GPT-4's reference answers for the math, reasoning and coding questions, and
reported per turn and overall (:func:`mt_bench_scores`).

**KL to the reference.** With ``y ~ pi(. | x)`` sampled from the policy at temperature 1 without
nucleus truncation, ``KL(pi || ref) = E_x E_y [ sum_t log pi(y_t | x, y_<t) - log ref(y_t | x, y_<t) ]``.
The estimate averages the per-sample log-ratio sums within each prompt, then over prompts; its
standard error is over prompts. Samples drawn with another temperature or ``top_p`` are not samples of
the policy, so the run draws separate ones for the KL estimate in that case.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import torch

from sepo.benchmarks import (
    ALPACA_EVAL_SIZE,
    load_alpaca_eval,
    load_mt_bench_questions,
    load_mt_bench_reference_answers,
    load_prompt_set,
)
from sepo.config import StageConfig, help_field
from sepo.data import build_sequences, check_same_tokenizer, tokenize_prompts, tokenize_responses
from sepo.errors import ConfigError, DataError
from sepo.judges import JUDGES, NEED_REFERENCE_CATEGORIES, build_judge, is_missing
from sepo.logprobs import token_logps
from sepo.utils import seed_everything, staged_dir, write_json, write_run_record

OUTPUT_FIELDS = ("instruction", "output", "generator")


def _sample_responses(model, tokenizer, prompts, **kwargs) -> list[list[str]]:
    """The package's sampler (:func:`sepo.generation.sample_responses`)."""
    from sepo.generation import sample_responses

    return sample_responses(model, tokenizer, prompts, **kwargs)


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (``nan`` error for fewer than two values)."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return float("nan"), float("nan")
    stderr = float(array.std(ddof=1) / math.sqrt(array.size)) if array.size > 1 else float("nan")
    return float(array.mean()), stderr


# --------------------------------------------------------------------------------------------
# Outputs in AlpacaEval's layout
# --------------------------------------------------------------------------------------------
def outputs_records(prompts: Sequence[dict], responses: Sequence[Sequence[str]], generator: str) -> list[dict]:
    """One AlpacaEval-layout row per sampled output; ``responses[i][j]`` is sample ``j`` of prompt ``i``."""
    if len(prompts) != len(responses):
        raise DataError(f"{len(responses)} response lists for {len(prompts)} prompts")
    rows = []
    for prompt, samples in zip(prompts, responses):
        for j, output in enumerate(samples):
            rows.append({"instruction": prompt["instruction"], "output": output, "generator": generator,
                         "dataset": prompt.get("dataset", ""), "index": prompt["index"], "sample": j})
    return rows


def read_json_rows(path: str | Path, what: str) -> list[dict]:
    """A file holding a non-empty JSON list of objects (AlpacaEval's layout); one error naming the file and row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: expected a non-empty JSON list of {what} rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i} is a {type(row).__name__}, expected an object")
    return rows


def load_outputs(path: str | Path) -> list[dict]:
    """An outputs file in AlpacaEval's layout (JSON list); a row missing a field is an error naming it."""
    rows = read_json_rows(path, "outputs")
    for i, row in enumerate(rows):
        for field in OUTPUT_FIELDS:
            if field not in row:
                raise DataError(f"{path}: row {i}: missing field '{field}'")
            if not isinstance(row[field], str):
                raise DataError(f"{path}: row {i}: field '{field}' must be a string, got {type(row[field]).__name__}")
    return rows


def check_same_instructions(model_rows: Sequence[dict], baseline_rows: Sequence[dict],
                            names: tuple[str, str] = ("model", "baseline")) -> None:
    """Raise :class:`DataError` unless both output sets cover the same instructions."""
    a = {r["instruction"] for r in model_rows}
    b = {r["instruction"] for r in baseline_rows}
    if a != b:
        only_a, only_b = sorted(a - b), sorted(b - a)
        raise DataError(
            f"the {names[0]} and {names[1]} outputs cover different instructions: {len(only_a)} only in "
            f"{names[0]} (e.g. {only_a[:2]}), {len(only_b)} only in {names[1]} (e.g. {only_b[:2]})"
        )


def pair_with_baseline(model_rows: Sequence[dict], baseline_rows: Sequence[dict]) -> list[dict]:
    """Annotation rows: every model output against the baseline's one output for the same instruction."""
    check_same_instructions(model_rows, baseline_rows)
    baseline: dict[str, dict] = {}
    for i, row in enumerate(baseline_rows):
        if row["instruction"] in baseline:
            raise DataError(f"baseline outputs: row {i}: a second output for instruction {row['instruction'][:60]!r}")
        baseline[row["instruction"]] = row
    return [_pair(baseline[row["instruction"]], row) for row in model_rows]


def pair_by_sample(model_rows: Sequence[dict], reference_rows: Sequence[dict]) -> list[dict]:
    """Annotation rows: sample ``j`` of the model against sample ``j`` of the reference, prompt by prompt."""
    check_same_instructions(model_rows, reference_rows, ("model", "reference"))
    reference = {(r.get("index"), r["instruction"], r.get("sample", 0)): r for r in reference_rows}
    pairs = []
    for i, row in enumerate(model_rows):
        key = (row.get("index"), row["instruction"], row.get("sample", 0))
        if key not in reference:
            raise DataError(f"model outputs: row {i}: the reference has no sample {key[2]} for prompt {key[0]}")
        pairs.append(_pair(reference[key], row))
    return pairs


def check_samples_per_prompt(rows: Sequence[dict], prompts: Sequence[dict], num_samples: int, source: str) -> None:
    """Raise :class:`DataError` unless ``rows`` hold samples ``0 .. num_samples-1`` of every prompt and nothing else."""
    expected = {(p["index"], p["instruction"], j) for p in prompts for j in range(num_samples)}
    found: set = set()
    for i, row in enumerate(rows):
        key = (row.get("index"), row["instruction"], row.get("sample", 0))
        if key not in expected:
            raise DataError(f"{source}: row {i}: sample {key[2]} of prompt {key[0]} is not one of the {num_samples} "
                            f"sample(s) per prompt of this prompt set")
        if key in found:
            raise DataError(f"{source}: row {i}: sample {key[2]} of prompt {key[0]} appears twice")
        found.add(key)
    if found != expected:
        index, _, sample = sorted(expected - found, key=lambda k: (k[0], k[2]))[0]
        raise DataError(f"{source}: {len(expected - found)} sample(s) missing, e.g. sample {sample} of prompt {index}")


def _pair(baseline: dict, model: dict) -> dict:
    return {"instruction": model["instruction"], "output_1": baseline["output"], "output_2": model["output"],
            "generator_1": baseline["generator"], "generator_2": model["generator"],
            "index": model.get("index"), "dataset": model.get("dataset", "")}


def annotate_pairs(judge, pairs: Sequence[dict]) -> list[dict]:
    """Judge annotation rows: adds ``preference`` (and the judge's raw text if it keeps one) and ``annotator``."""
    instructions = [p["instruction"] for p in pairs]
    outputs_1 = [p["output_1"] for p in pairs]
    outputs_2 = [p["output_2"] for p in pairs]
    if hasattr(judge, "annotate"):
        judged = judge.annotate(instructions, outputs_1, outputs_2)
    else:
        judged = [{"preference": p} for p in judge.compare(instructions, outputs_1, outputs_2)]
    if len(judged) != len(pairs):
        raise DataError(f"judge {judge.name!r} returned {len(judged)} judgements for {len(pairs)} pairs")
    return [{**pair, **verdict, "annotator": judge.name} for pair, verdict in zip(pairs, judged)]


# --------------------------------------------------------------------------------------------
# Win rates
# --------------------------------------------------------------------------------------------
def _judged_frame(annotations: Sequence[dict] | pd.DataFrame) -> tuple[pd.DataFrame, int]:
    frame = pd.DataFrame(annotations)
    if "preference" not in frame.columns:
        raise DataError("annotations have no 'preference' column")
    skipped = frame["preference"].map(is_missing)
    frame = frame[~skipped].copy()
    frame["preference"] = frame["preference"].astype(float)
    bad = frame.index[(frame["preference"] < 1) | (frame["preference"] > 2)].tolist()
    if bad:
        raise DataError(f"annotation row {bad[0]}: preference {frame.loc[bad[0], 'preference']} is outside [1, 2]")
    if frame.empty:
        raise DataError(f"no annotation could be parsed: all {int(skipped.sum())} judgements were skipped")
    return frame, int(skipped.sum())


def win_rate(annotations: Sequence[dict] | pd.DataFrame) -> dict[str, float]:
    """``alpaca_eval.metrics.get_winrate`` on the parsed rows, with ``n_skipped`` (unparseable) counted.

    Returns ``win_rate`` and ``standard_error`` (percent), ``discrete_win_rate``, ``n_wins``,
    ``n_wins_base``, ``n_draws``, ``n_total`` (parsed rows) and ``n_skipped``.
    """
    frame, n_skipped = _judged_frame(annotations)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        from alpaca_eval.metrics import get_winrate

    metrics = {k: (v.item() if hasattr(v, "item") else v) for k, v in get_winrate(frame).items()}
    metrics["n_skipped"] = n_skipped
    keys = [c for c in ("index", "instruction") if c in frame.columns]  # rows naming no prompt: one prompt each
    per_prompt = (frame.groupby(keys, sort=False, dropna=False)["preference"].mean() if keys else frame["preference"]) - 1.0
    metrics["standard_error_rows"] = metrics["standard_error"]
    metrics["standard_error"] = mean_and_stderr(per_prompt.to_numpy())[1] * 100.0
    metrics["n_prompts"] = int(per_prompt.size)
    return metrics


def load_annotations(path: str | Path) -> list[dict]:
    """An annotation file in AlpacaEval's layout (a JSON list of rows, e.g. alpaca_eval's ``annotations.json``)."""
    return read_json_rows(path, "annotation")


def _alpaca_eval_order(frame: pd.DataFrame, source: str, benchmark_root: str | Path | None) -> pd.DataFrame:
    """``frame`` with an ``index`` column giving each row's position among AlpacaEval's 805 instructions.

    With an ``index`` column, every row's index must point at its own instruction. Without one (AlpacaEval's
    own annotation files), alpaca_eval's GLM takes the row position as the index (``reset_index``), so row
    ``i`` must hold AlpacaEval's instruction ``i``.
    """
    reference = [r["instruction"] for r in load_alpaca_eval(benchmark_root)]
    for field in ("instruction", "output_1", "output_2", "preference"):
        if field not in frame.columns:
            raise DataError(f"{source}: no field '{field}' (AlpacaEval's annotation layout)")
    frame = frame.reset_index(drop=True)
    if "index" not in frame.columns:
        if len(frame) > ALPACA_EVAL_SIZE:
            raise DataError(f"{source}: {len(frame)} rows and no 'index' field; AlpacaEval has {ALPACA_EVAL_SIZE} instructions")
        for i, instruction in enumerate(frame["instruction"]):
            if instruction != reference[i]:
                raise DataError(
                    f"{source}: row {i}: field 'instruction' is not AlpacaEval's instruction {i} (got {str(instruction)[:60]!r}, "
                    f"expected {reference[i][:60]!r}); without an 'index' field the rows must be in AlpacaEval's order")
        return frame.assign(index=np.arange(len(frame)))
    for i, row in frame.iterrows():
        index = row["index"]
        ok = isinstance(index, (int, np.integer)) and 0 <= index < ALPACA_EVAL_SIZE and reference[index] == row["instruction"]
        if not ok:
            raise DataError(f"{source}: row {i}: field 'index' ({index!r}) is not this instruction's position among "
                            f"AlpacaEval's {ALPACA_EVAL_SIZE} (the length-controlled rate needs the original order)")
    return frame


def length_controlled_win_rate(annotations: Sequence[dict] | pd.DataFrame | str | Path, df_gamed_path: str | Path,
                               benchmark_root: str | Path | None = None) -> dict[str, float]:
    """AlpacaEval 2's length-controlled win rate, from a local copy of AlpacaEval's ``df_gamed.csv``.

    ``annotations`` are rows in AlpacaEval's layout or the path of an annotation file (alpaca_eval's own
    ``annotations.json`` has no ``index`` field: then its rows must be AlpacaEval's instructions in
    AlpacaEval's order, which is checked). alpaca_eval fetches ``df_gamed.csv`` from the hub on every call;
    here it is read from ``df_gamed_path`` instead and nothing is downloaded. The GLM looks each
    instruction's difficulty up by its index in AlpacaEval's order.
    """
    path = Path(df_gamed_path) if df_gamed_path else None
    if path is None or not path.is_file():
        raise ConfigError(
            f"the length-controlled win rate needs a local copy of AlpacaEval's df_gamed.csv "
            f"(dataset tatsu-lab/alpaca_eval on the Hugging Face hub); got {str(df_gamed_path)!r}"
        )
    source = "annotations"
    if isinstance(annotations, (str, Path)):
        source, annotations = str(annotations), load_annotations(annotations)
    frame, n_skipped = _judged_frame(_alpaca_eval_order(pd.DataFrame(annotations), source, benchmark_root))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        from alpaca_eval.metrics import glm_winrate

    with mock.patch.object(glm_winrate, "hf_hub_download", lambda **_: str(path)), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")  # alpaca_eval's GLM call style
        metrics = glm_winrate.get_length_controlled_winrate(
            frame.reset_index(drop=True), save_weights_dir=None, is_add_glm_preference_inplace=False)
    metrics = {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}
    metrics["n_skipped"] = n_skipped
    return metrics


# --------------------------------------------------------------------------------------------
# Arena-Hard: Bradley-Terry against the baseline, bootstrap intervals (arena-hard-auto's show_result.py)
# --------------------------------------------------------------------------------------------
# Winner of one game by its verdict label, seen from the game's assistant A; arena-hard-auto counts only
# these five labels (any other is a game without a battle) and a ">>" verdict as `weight` battles.
_GAME_LABELS = {"A>>B": ("A", True), "A>B": ("A", False), "A=B": ("tie", False), "B>A": ("B", False), "B>>A": ("B", True)}


def arena_hard_battles(annotations: Sequence[dict], weight: int = 3) -> tuple[pd.DataFrame, int]:
    """Battles from Arena-Hard annotation rows, as arena-hard-auto's ``get_battles_from_row`` makes them.

    Each row (``generator_1`` the baseline, ``generator_2`` the evaluated model, ``verdicts`` the labels of
    the game with the baseline as assistant A and of the game with the answers swapped) gives one battle
    per parseable game, ``weight`` copies for a ``>>`` verdict. Returns the battles (``question``,
    ``model_a`` = baseline, ``model_b``, ``winner`` in ``model_a | model_b | tie``) and the number of
    games without a battle (no verdict, or a label outside the five).
    """
    battles, skipped = [], 0
    for i, row in enumerate(annotations):
        verdicts = row.get("verdicts")
        if not isinstance(verdicts, (list, tuple)) or len(verdicts) != 2:
            raise DataError(f"annotation row {i}: field 'verdicts' must hold the labels of the two games")
        for game, label in enumerate(verdicts):
            if label not in _GAME_LABELS:
                skipped += 1
                continue
            side, strong = _GAME_LABELS[label]
            baseline_side = "A" if game == 0 else "B"  # game 2 swaps the answers
            winner = "tie" if side == "tie" else ("model_a" if side == baseline_side else "model_b")
            battle = {"question": row.get("index", row.get("instruction")), "model_a": row["generator_1"],
                      "model_b": row["generator_2"], "winner": winner}
            battles.extend([battle] * (weight if strong else 1))
    return pd.DataFrame(battles, columns=["question", "model_a", "model_b", "winner"]), skipped


def bradley_terry_elo(battles: pd.DataFrame, baseline: str) -> pd.Series:
    """arena-hard-auto's ``compute_mle_elo``: Bradley-Terry by logistic regression, Elo scale, baseline at 1000.

    Every battle is counted twice; a tie counts once as a win of ``model_a`` and once as a win of
    ``model_b``. The logistic regression (scikit-learn, no intercept, no penalty) has one coefficient per
    model with features ``+log 10`` (``model_a``) and ``-log 10`` (``model_b``). When one side wins every
    battle the likelihood has no maximum; each model then gets +-inf against the baseline (win rate 100 or 0).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    models = pd.Index(sorted(set(battles["model_a"]) | set(battles["model_b"])))
    if baseline not in models:
        raise DataError(f"the baseline {baseline!r} plays no battle")
    doubled = pd.concat([battles, battles], ignore_index=True)
    n = len(doubled)
    X = np.zeros((n, len(models)))
    X[np.arange(n), models.get_indexer(doubled["model_a"])] = math.log(10)
    X[np.arange(n), models.get_indexer(doubled["model_b"])] = -math.log(10)
    y = (doubled["winner"] == "model_a").to_numpy(dtype=float)
    y[: n // 2][(battles["winner"] == "tie").to_numpy()] = 1.0
    if y.min() == y.max():  # separable: every battle won by the same side
        elo = pd.Series(np.where(models == baseline, 1000.0, np.inf if y[0] == 0 else -np.inf), index=models)
        return elo
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        fit = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-8).fit(X, y)
    elo = pd.Series(400.0 * fit.coef_[0] + 1000.0, index=models)
    return elo + 1000.0 - elo[baseline]


def elo_to_win_rate(elo: float | np.ndarray, baseline_elo: float = 1000.0) -> float | np.ndarray:
    """Percent win rate against the baseline predicted by Elo ratings (arena-hard-auto's ``predict_win_rate``)."""
    from scipy.special import expit

    return 100.0 * expit(math.log(10.0) * (np.asarray(elo, dtype=float) - baseline_elo) / 400.0)


def arena_hard_leaderboard(battles: pd.DataFrame, baseline: str, *, num_rounds: int = 100, seed: int = 0) -> pd.DataFrame:
    """Each model's Arena-Hard score against ``baseline`` with its 95% bootstrap interval (percent).

    The score is the win rate against the baseline predicted by the Bradley-Terry fit on all battles; the
    interval is the 2.5 and 97.5 percentiles of the fit over ``num_rounds`` resamplings of the battles
    with replacement (seeded: the same battles and seed give the same interval). The baseline scores 50.
    """
    if num_rounds < 1:
        raise ConfigError(f"num_rounds = {num_rounds}: must be >= 1")
    if battles.empty:
        raise DataError("no battle: every Arena-Hard game was unparseable")
    point = bradley_terry_elo(battles, baseline)
    rng = np.random.default_rng(seed)
    rounds = pd.DataFrame([bradley_terry_elo(battles.iloc[rng.integers(0, len(battles), len(battles))], baseline)
                           for _ in range(num_rounds)])
    rows = []
    for model in point.index:
        mask = (battles["model_a"] == model) | (battles["model_b"] == model)
        # percentiles of the Elo ratings, as arena-hard-auto takes them (a round without the model has none;
        # an unbounded rating, every battle won by one side, is held at +-1e6: a 100% or 0% win rate)
        elo_rounds = np.clip(rounds[model].to_numpy(dtype=float), -1e6, 1e6)
        low, high = np.nanpercentile(elo_rounds, [2.5, 97.5]) if model != baseline else (1000.0, 1000.0)
        rows.append({"model": model, "score": float(elo_to_win_rate(point[model])), "lower": float(elo_to_win_rate(low)),
                     "upper": float(elo_to_win_rate(high)), "elo": float(point[model]), "n_battles": int(mask.sum())})
    return pd.DataFrame(rows).sort_values("score", ascending=False, ignore_index=True)


def arena_hard_score(annotations: Sequence[dict], *, num_rounds: int = 100, seed: int = 0, weight: int = 3) -> dict[str, Any]:
    """The evaluated model's Arena-Hard score (``generator_2`` of every row) against its baseline (``generator_1``).

    Returns ``score``, ``lower``, ``upper`` (percent; the baseline is 50), ``baseline``, ``n_battles``,
    ``n_questions``, ``n_games_skipped`` and ``bootstrap_rounds``.
    """
    rows = list(annotations)
    for field in ("generator_1", "generator_2"):
        names = {r.get(field) for r in rows}
        if len(names) != 1:
            raise DataError(f"annotations: field '{field}' must name one model, found {sorted(map(str, names))}")
    baseline, model = rows[0]["generator_1"], rows[0]["generator_2"]
    if baseline == model:
        raise DataError(f"annotations: the evaluated model and the baseline are both {model!r}")
    battles, skipped = arena_hard_battles(rows, weight)
    board = arena_hard_leaderboard(battles, baseline, num_rounds=num_rounds, seed=seed).set_index("model")
    return {"score": board.loc[model, "score"], "lower": board.loc[model, "lower"], "upper": board.loc[model, "upper"],
            "baseline": baseline, "n_battles": int(len(battles)), "n_questions": len(rows), "n_games_skipped": skipped,
            "bootstrap_rounds": num_rounds}


# --------------------------------------------------------------------------------------------
# KL(policy || reference)
# --------------------------------------------------------------------------------------------
def _response_ids(tokenizer, responses: Sequence[str], max_new_tokens: int | None) -> list[list[int]]:
    """Each response's ids as sampled: EOS only if generation stopped by itself before ``max_new_tokens``
    (all responses encoded in one call)."""
    out = []
    for ids, _ in tokenize_responses(tokenizer, responses):
        if max_new_tokens is not None and len(ids) - 1 >= max_new_tokens:
            ids = ids[:max_new_tokens]  # cut by the length limit: no EOS was sampled
        out.append(ids)
    return out


def _lengths(tokenizer, responses: Sequence[str]) -> list[int]:
    """Each response's length in tokens, EOS not counted."""
    return [len(ids) - 1 for ids in _response_ids(tokenizer, responses, None)]


def cut_off(tokenizer, response: str, max_new_tokens: int) -> bool:
    """Whether a sampled response hit ``max_new_tokens`` without sampling EOS (as :func:`estimate_kl` reads it)."""
    return _lengths(tokenizer, [response])[0] >= max_new_tokens


def sample_lengths(tokenizer, responses: Sequence[str], max_new_tokens: int) -> dict[str, float]:
    """Mean length in tokens of sampled responses (EOS not counted) and the share that hit ``max_new_tokens``
    without sampling EOS (cut off, :func:`cut_off`)."""
    lengths = _lengths(tokenizer, responses)
    if not lengths:
        return {"mean_tokens": float("nan"), "cutoff_share": float("nan"), "n": 0}
    return {"mean_tokens": float(np.mean(lengths)),
            "cutoff_share": float(np.mean([n >= max_new_tokens for n in lengths])), "n": len(lengths)}


def cut_off_loses(annotations: Sequence[dict], tokenizer, max_new_tokens: int) -> list[dict]:
    """Annotations in which a cut-off output (:func:`cut_off`) loses to a finished one: ``preference`` 1 when only
    ``output_2`` was cut off, 2 when only ``output_1`` was; the judge's own verdict stays as ``judge_preference`` and
    each side's state as ``output_1_cut_off`` / ``output_2_cut_off``."""
    lengths = [_lengths(tokenizer, [row[f"output_{i}"] for row in annotations]) for i in (1, 2)]
    out = []
    for row, length_1, length_2 in zip(annotations, *lengths):
        cut_1, cut_2 = length_1 >= max_new_tokens, length_2 >= max_new_tokens
        preference = 1 if cut_2 and not cut_1 else 2 if cut_1 and not cut_2 else row["preference"]
        out.append({**row, "preference": preference, "judge_preference": row["preference"],
                    "output_1_cut_off": cut_1, "output_2_cut_off": cut_2})
    return out


@torch.inference_mode()
def sequence_log_ratios(policy, reference, tokenizer, prompts: Sequence[str], responses: Sequence[str], *,
                        max_new_tokens: int | None = None, batch_size: int = 16) -> list[float]:
    """``sum_t [log pi(y_t) - log ref(y_t)]`` over each response's tokens (one value per pair, in order); pairs
    run in batches of similar length (:func:`sepo.scoring.length_sorted_batches`)."""
    from sepo.scoring import length_sorted_batches

    if len(prompts) != len(responses):
        raise DataError(f"{len(prompts)} prompts for {len(responses)} responses")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompt_ids = tokenize_prompts(tokenizer, prompts)
    response_ids = _response_ids(tokenizer, responses, max_new_tokens)
    device = next(policy.parameters()).device
    out: list[float] = [0.0] * len(prompts)
    for group in length_sorted_batches([len(p) + len(r) for p, r in zip(prompt_ids, response_ids)], batch_size):
        batch = build_sequences([prompt_ids[i] for i in group], [response_ids[i] for i in group], pad_id)
        mask = batch["response_mask"].to(device)  # (B, T-1): positions scoring response tokens
        args = (batch["input_ids"].to(device), batch["attention_mask"].to(device), mask)
        ratio = token_logps(policy, *args) - token_logps(reference, *args)  # (B, T-1), zero off the mask
        for i, value in zip(group, (ratio * mask).sum(-1).tolist()):
            out[i] = value
    return out


def estimate_kl(policy, reference, tokenizer, prompts: Sequence[str], responses: Sequence[Sequence[str]] | None = None,
                *, num_samples: int = 4, max_new_tokens: int = 64, seed: int = 0, batch_size: int = 16) -> dict[str, float]:
    """Sample-based ``KL(policy || reference)`` on ``prompts``, with its standard error over prompts.

    ``responses[i]`` are samples of the policy for prompt ``i`` drawn at temperature 1 with ``top_p`` 1
    (drawn here when not given). Returns ``kl``, ``kl_stderr``, ``n_prompts`` and ``n_samples``.
    """
    if responses is None:
        responses = _sample_responses(policy, tokenizer, list(prompts), num_samples=num_samples,
                                      max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0, seed=seed,
                                      batch_size=batch_size)
    if len(responses) != len(prompts):
        raise DataError(f"{len(responses)} response lists for {len(prompts)} prompts")
    flat_prompts = [p for p, samples in zip(prompts, responses) for _ in samples]
    flat_responses = [r for samples in responses for r in samples]
    ratios = sequence_log_ratios(policy, reference, tokenizer, flat_prompts, flat_responses,
                                 max_new_tokens=max_new_tokens, batch_size=batch_size)
    per_prompt, at = [], 0
    for samples in responses:
        if not samples:
            raise DataError("a prompt has no sample; the KL estimate needs at least one per prompt")
        per_prompt.append(float(np.mean(ratios[at : at + len(samples)])))
        at += len(samples)
    kl, stderr = mean_and_stderr(per_prompt)
    return {"kl": kl, "kl_stderr": stderr, "n_prompts": len(per_prompt), "n_samples": len(ratios)}


def mean_reward(gold, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> dict[str, float]:
    """Gold reward averaged within each prompt, then over prompts, with its standard error over prompts."""
    per_prompt = []
    for prompt, samples in zip(prompts, responses):
        rewards = gold.rewards([prompt] * len(samples), list(samples))
        per_prompt.append(float(np.mean(rewards)))
    reward, stderr = mean_and_stderr(per_prompt)
    return {"reward": reward, "reward_stderr": stderr}


def reward_kl_frontier(checkpoints: Iterable[tuple[str, int, Any]], reference, tokenizer, prompts: Sequence[str], gold,
                       *, num_samples: int = 4, max_new_tokens: int = 64, seed: int = 0,
                       batch_size: int = 16) -> pd.DataFrame:
    """Gold reward against KL to the reference over training checkpoints, per method.

    ``checkpoints`` yields ``(method, step, model)`` with ``model`` a causal LM or a model directory. Each
    checkpoint's samples (temperature 1, same seed for all) give both its mean gold reward and its KL.
    Returns one row per checkpoint: ``method, step, kl, kl_stderr, reward, reward_stderr, n_prompts``.
    """
    rows = []
    for method, step, model in checkpoints:
        if isinstance(model, (str, Path)):
            from sepo.trainer import load_causal_lm

            model = load_causal_lm(str(model), f"checkpoint {method}/{step}")
        model.eval()
        responses = _sample_responses(model, tokenizer, list(prompts), num_samples=num_samples,
                                      max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0, seed=seed,
                                      batch_size=batch_size)
        kl = estimate_kl(model, reference, tokenizer, prompts, responses, max_new_tokens=max_new_tokens,
                         batch_size=batch_size)
        rows.append({"method": method, "step": step, "kl": kl["kl"], "kl_stderr": kl["kl_stderr"],
                     **mean_reward(gold, prompts, responses), "n_prompts": kl["n_prompts"]})
    return pd.DataFrame(rows, columns=["method", "step", "kl", "kl_stderr", "reward", "reward_stderr", "n_prompts"])


# --------------------------------------------------------------------------------------------
# MT-Bench: two turns generated, single-answer grading per turn (FastChat's llm_judge)
# --------------------------------------------------------------------------------------------
# FastChat's gen_model_answer samples each category at its own temperature (0: greedy decoding).
MT_BENCH_TEMPERATURES = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                         "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
MT_BENCH_DEFAULT_TEMPERATURE = 0.7


def mt_bench_answers(model, tokenizer, questions: Sequence[dict], *, generator: str, num_samples: int = 1,
                     max_new_tokens: int = 1024, temperature: float | None = None, top_p: float = 1.0, seed: int = 0,
                     batch_size: int = 16) -> list[dict]:
    """Both turns of every MT-Bench question, as FastChat's ``gen_model_answer`` draws them.

    One conversation per question and sample: the first question as a user message, the model's answer,
    then the second question asked after the model's **own** first answer. ``temperature`` ``None`` uses
    FastChat's per-category temperatures (:data:`MT_BENCH_TEMPERATURES`). Returns FastChat's answer layout:
    ``{"question_id", "category", "model_id", "choices": [{"index": j, "turns": [answer_1, answer_2]}]}``.
    """
    groups: dict[float, list[int]] = {}
    for i, question in enumerate(questions):
        t = temperature if temperature is not None else MT_BENCH_TEMPERATURES.get(question["category"], MT_BENCH_DEFAULT_TEMPERATURE)
        groups.setdefault(t, []).append(i)
    turns: list[list[list[str]]] = [[] for _ in questions]  # turns[i][j]: the two answers of sample j of question i
    for t, members in sorted(groups.items()):
        sampling = dict(max_new_tokens=max_new_tokens, temperature=t, top_p=top_p, batch_size=batch_size)
        first = [[{"role": "user", "content": questions[i]["turns"][0]}] for i in members]
        answers_1 = _sample_responses(model, tokenizer, first, num_samples=num_samples, seed=seed, **sampling)
        second = [conversation + [{"role": "assistant", "content": answer}, {"role": "user", "content": questions[i]["turns"][1]}]
                  for i, conversation, samples in zip(members, first, answers_1) for answer in samples]
        answers_2 = iter(_sample_responses(model, tokenizer, second, num_samples=1, seed=seed + 1, **sampling))
        for i, samples in zip(members, answers_1):
            turns[i] = [[answer, next(answers_2)[0]] for answer in samples]
    return [{"question_id": q["question_id"], "category": q["category"], "model_id": generator,
             "choices": [{"index": j, "turns": pair} for j, pair in enumerate(turns[i])]} for i, q in enumerate(questions)]


def load_mt_bench_answers(path: str | Path, questions: Sequence[dict], num_samples: int) -> list[dict]:
    """An answers file in FastChat's layout (JSON list) holding ``num_samples`` two-turn choices per question."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"MT-Bench answers file not found: {path}")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of answer rows")
    by_id = {}
    for i, row in enumerate(rows):
        where = f"{path}: row {i}"
        if not isinstance(row, dict) or "question_id" not in row:
            raise DataError(f"{where}: missing field 'question_id'")
        choices = row.get("choices")
        if not isinstance(choices, list) or len(choices) != num_samples:
            raise DataError(f"{where}: field 'choices' must hold {num_samples} choice(s) (num_samples)")
        for j, choice in enumerate(choices):
            turns = choice.get("turns") if isinstance(choice, dict) else None
            if not (isinstance(turns, list) and len(turns) == 2 and all(isinstance(t, str) for t in turns)):
                raise DataError(f"{where}: field 'choices[{j}].turns' must hold two strings (one answer per turn)")
        if row["question_id"] in by_id:
            raise DataError(f"{where}: question {row['question_id']} appears twice")
        by_id[row["question_id"]] = row
    missing = [q["question_id"] for q in questions if q["question_id"] not in by_id]
    extra = sorted(set(by_id) - {q["question_id"] for q in questions}, key=str)
    if missing or extra:
        raise DataError(f"{path}: answers do not match the questions: missing {missing[:5]}, not asked {extra[:5]}")
    return [by_id[q["question_id"]] for q in questions]


def grade_mt_bench(judge, questions: Sequence[dict], answers: Sequence[dict], reference_answers: dict[int, list[str]]) -> list[dict]:
    """One judgment per (question, turn, sample): :meth:`sepo.judges.MTBenchJudge.grade_questions` on each sample."""
    rows = []
    for j in range(len(answers[0]["choices"]) if answers else 0):
        graded = judge.grade_questions(questions, [a["choices"][j]["turns"] for a in answers], reference_answers)
        rows.extend({**row, "model": answers[0]["model_id"], "sample": j} for row in graded)
    return rows


def mt_bench_scores(judgments: Sequence[dict]) -> dict[str, Any]:
    """MT-Bench scores per turn and overall, as FastChat's ``show_result.py`` computes them.

    Each mean is over the graded rows (unparseable judgments left out and counted in ``n_skipped``);
    overall pools both turns. ``stderr`` is over questions (each question's mean over its rows), since
    the turns and samples of one question are not independent. ``by_category`` is the overall mean per category.
    """
    frame = pd.DataFrame(judgments)
    graded = frame[~frame["score"].map(is_missing)].astype({"score": float})
    out: dict[str, Any] = {}
    for name, turns in (("turn_1", (1,)), ("turn_2", (2,)), ("overall", (1, 2))):
        part = graded[graded["turn"].isin(turns)]
        per_question = part.groupby("question_id")["score"].mean().to_numpy()
        out[name] = {"mean": float(part["score"].mean()) if len(part) else float("nan"),
                     "stderr": mean_and_stderr(per_question)[1], "n": int(len(part)),
                     "n_questions": int(per_question.size), "n_skipped": int(frame["turn"].isin(turns).sum() - len(part))}
    out["by_category"] = {k: float(v) for k, v in graded.groupby("category")["score"].mean().items()}
    return out


# --------------------------------------------------------------------------------------------
# One table of every benchmark's scores with their 95% intervals
# --------------------------------------------------------------------------------------------
BENCHMARK_NAMES = {"arena_hard": "Arena-Hard", "mt_bench": "MT-Bench", "weighted_alpaca_eval_gpt4_turbo": "AlpacaEval 2"}
Z_95 = 1.959963984540054


def benchmark_rows(metrics: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """The scores of one evaluate run (its ``metrics``) with their 95% intervals, one row per score.

    Columns: ``benchmark, metric, model, score, lower, upper, interval, scale``. Arena-Hard's interval is
    its bootstrap interval; win rates and MT-Bench scores get mean +- 1.96 standard errors (over prompts
    or questions). ``scale`` is ``percent`` (50 is parity with the opponent) or ``1-10`` (MT-Bench).
    """
    judge = metrics.get("judge", "")
    benchmark = BENCHMARK_NAMES.get(judge, judge)
    rows = []

    def add(metric, score, lower, upper, interval, scale="percent"):
        rows.append({"benchmark": benchmark, "metric": metric, "model": model, "score": score, "lower": lower,
                     "upper": upper, "interval": interval, "scale": scale})

    def normal(metric, mean, stderr, scale="percent"):
        half = Z_95 * stderr if stderr is not None and math.isfinite(stderr) else float("nan")
        add(metric, mean, mean - half, mean + half, "normal (1.96 SE)", scale)

    for opponent in ("baseline", "reference"):
        if f"arena_hard_vs_{opponent}" in metrics:
            m = metrics[f"arena_hard_vs_{opponent}"]
            add(f"score vs {opponent}", m["score"], m["lower"], m["upper"], f"bootstrap ({m['bootstrap_rounds']} rounds)")
        elif f"vs_{opponent}" in metrics:
            normal(f"win rate vs {opponent}", metrics[f"vs_{opponent}"]["win_rate"], metrics[f"vs_{opponent}"]["standard_error"])
    if "vs_baseline_length_controlled" in metrics:
        m = metrics["vs_baseline_length_controlled"]
        normal("LC win rate vs baseline", m["length_controlled_winrate"], m.get("lc_standard_error"))
    for turn in ("turn_1", "turn_2", "overall") if "mt_bench_policy" in metrics else ():
        m = metrics["mt_bench_policy"][turn]
        normal(turn.replace("_", " "), m["mean"], m["stderr"], scale="1-10")
    return rows


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class EvalConfig(StageConfig):
    """Parameters of one evaluation run (also the papermill parameters of its notebook)."""

    model_dir: str = help_field("", help="directory of the policy to evaluate (a saved causal LM with its tokenizer)")
    reference_dir: str = help_field("", help="directory of the SFT/reference model: the first opponent and the KL anchor")
    generator: str = help_field("", help="name of the evaluated model in the outputs (default: model_dir's last parts)")
    reference_generator: str = help_field("", help="name of the reference model in the outputs (default: from reference_dir)")
    prompt_set: str = help_field("", help="alpaca_eval, arena_hard, mt_bench or a .json/.jsonl file of instructions (with "
                                       "judge mt_bench: both turns of the MT-Bench questions, or a question file in FastChat's layout; "
                                       "with another judge, mt_bench means its first turns)")
    max_prompts: int = help_field(0, help="evaluate the first max_prompts prompts only (0: all)")
    baseline_outputs: str = help_field("", help="outputs of a fixed baseline in AlpacaEval's layout ('' : none)")
    reference_outputs: str = help_field("", help="the reference model's samples on these prompts (AlpacaEval layout, "
                                               "num_samples per prompt, e.g. written by sample_reference_outputs), reused "
                                               "instead of sampling the reference again ('' : sample it here)")
    num_samples: int = help_field(1, help="samples per prompt")
    max_new_tokens: int = help_field(64, help="longest sampled response, in tokens")
    temperature: float = help_field(1.0, help="sampling temperature")
    top_p: float = help_field(1.0, help="nucleus sampling mass")
    seed: int = help_field(0, help="seed of sampling (and of the judge's random output order)")
    batch_size: int = help_field(16, help="prompts per generation / scoring batch")
    judge: str = help_field("gold", help=f"one of {JUDGES}; all but 'gold' call an LLM API")
    judge_model: str = help_field("", help="judge model name for LLM judges ('' : the benchmark's official judge)")
    base_url: str = help_field("", help="OpenAI-compatible API base URL for LLM judges ('' : OpenAI)")
    api_key_env: str = help_field("OPENAI_API_KEY", help="environment variable holding the LLM judge's API key")
    estimate_kl: bool = help_field(True, help="estimate KL(policy || reference) on the eval prompts")
    cutoff_loses: bool = help_field(False, help="a sample cut off at max_new_tokens (it never ended) loses to a finished "
                                               "one, whatever the judge says of their text (for a judge that reads the "
                                               "text alone, like the mini world's gold reward); two cut-off samples are "
                                               "judged as usual")
    chat_template: bool = help_field(False, help="send each instruction as a user message through the tokenizer's "
                                               "chat template (as the policy saw its training prompts)")
    device: str = help_field("cpu", help="device of the policy and reference while sampling and scoring ('cuda', 'cuda:1', ...)")
    bf16: bool = help_field(False, help="load the policy and the reference in bfloat16")
    lc_df_gamed_path: str = help_field("", help="local copy of AlpacaEval's df_gamed.csv for the length-controlled win rate ('' : skip)")
    mt_bench_temperatures: bool = help_field(True, help="MT-Bench answers at FastChat's per-category temperatures (writing, roleplay "
                                                      "0.7; stem, humanities 0.1; others greedy) instead of `temperature`")
    bootstrap_rounds: int = help_field(100, help="bootstrap rounds of the Arena-Hard Bradley-Terry interval (arena-hard-auto: 100)")
    out_dir: str = help_field("runs/evaluate", help="run directory (written all at once on success)")

    def validate(self) -> None:
        self._require(bool(self.model_dir), "model_dir", "the policy to evaluate is required")
        self._require(bool(self.reference_dir), "reference_dir", "the SFT/reference model is required")
        self._require(bool(self.prompt_set), "prompt_set", "a prompt set or prompt file is required")
        self._require(self.max_prompts >= 0, "max_prompts", "must be >= 0 (0: all)")
        self._require(self.num_samples >= 1, "num_samples", "must be >= 1")
        self._require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        self._require(self.temperature > 0, "temperature", "must be > 0")
        self._require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        self._require(self.batch_size >= 1, "batch_size", "must be >= 1")
        self._require(self.judge in JUDGES, "judge", f"must be one of {JUDGES}")
        self._require(bool(self.out_dir), "out_dir", "a run directory is required")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            self._require(False, "device", "not a torch device name (e.g. 'cpu', 'cuda', 'cuda:0')")
        self._require(self.bootstrap_rounds >= 1, "bootstrap_rounds", "must be >= 1")
        if self.judge == "mt_bench":
            self._require(self.prompt_set == "mt_bench" or Path(self.prompt_set).suffix == ".jsonl", "prompt_set",
                          "the mt_bench judge grades MT-Bench questions: 'mt_bench' or a question file (.jsonl, FastChat's layout)")
            self._require(self.chat_template, "chat_template", "MT-Bench is a two-turn chat: the second question follows "
                                                               "the model's first answer in its chat template (set it to true)")
            self._require(not self.baseline_outputs, "baseline_outputs", "MT-Bench grades single answers, against no baseline")
        if self.lc_df_gamed_path:
            self._require(self.prompt_set == "alpaca_eval" and self.max_prompts == 0, "lc_df_gamed_path",
                          "the length-controlled win rate needs prompt_set='alpaca_eval' with all 805 instructions")
            self._require(Path(self.lc_df_gamed_path).is_file(), "lc_df_gamed_path", "no such file")

    @property
    def samples_are_from_policy(self) -> bool:
        """Samples at temperature 1 without nucleus truncation are samples of the policy itself."""
        return self.temperature == 1.0 and self.top_p == 1.0


def _default_name(path: str) -> str:
    parts = Path(path).resolve().parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else str(path)


def _default_gold():
    from sepo.world.judge import GoldJudge

    return GoldJudge()


def _model_inputs(config: EvalConfig, prompts: Sequence[dict]) -> list:
    """What the models read: the instruction, or a user message rendered by the chat template."""
    return [[{"role": "user", "content": p["instruction"]}] if config.chat_template else p["instruction"] for p in prompts]


def _check_chat_template(config: EvalConfig, tokenizer, path: str) -> None:
    if config.chat_template and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"EvalConfig.chat_template = True: the tokenizer of {path!r} has no chat template")


def _sampling(config: EvalConfig) -> dict[str, Any]:
    return dict(num_samples=config.num_samples, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                top_p=config.top_p, seed=config.seed, batch_size=config.batch_size)


def _mt_bench_questions(config: EvalConfig) -> tuple[list[dict], dict[int, list[str]]]:
    """The questions to ask and the GPT-4 reference answers; a graded-with-reference question without one is an error."""
    questions = load_mt_bench_questions(path=None if config.prompt_set == "mt_bench" else config.prompt_set)
    questions = questions[: config.max_prompts or None]
    references = load_mt_bench_reference_answers()
    for question in questions:
        if question["category"] in NEED_REFERENCE_CATEGORIES and question["question_id"] not in references:
            raise DataError(f"{config.prompt_set}: question {question['question_id']} ({question['category']}) has no GPT-4 "
                            f"reference answer; MT-Bench grades {list(NEED_REFERENCE_CATEGORIES)} against one")
    return questions, references


def _mt_bench_sampling(config: EvalConfig) -> dict[str, Any]:
    return dict(num_samples=config.num_samples, max_new_tokens=config.max_new_tokens, top_p=config.top_p, seed=config.seed,
                temperature=None if config.mt_bench_temperatures else config.temperature, batch_size=config.batch_size)


def sample_reference_outputs(config: EvalConfig, path: str | Path) -> Path:
    """Write the reference model's samples exactly as :func:`run_evaluate` would draw them, for ``reference_outputs``.

    Sampling is seeded per call, so these are the samples an evaluation with the same prompts and
    sampling fields draws from ``reference_dir``; evaluations of several policies against one
    reference (a table's rows) then share one set of reference samples instead of redrawing it. With the
    ``mt_bench`` judge they are two-turn answers in FastChat's layout.
    """
    from sepo.trainer import load_causal_lm, load_tokenizer

    mt_bench = config.judge == "mt_bench"
    questions = _mt_bench_questions(config)[0] if mt_bench else None
    prompts = None if mt_bench else load_prompt_set(config.prompt_set, limit=config.max_prompts or None)
    tokenizer = load_tokenizer(config.reference_dir, "reference_dir")
    _check_chat_template(config, tokenizer, config.reference_dir)
    reference = load_causal_lm(config.reference_dir, "reference_dir", bf16=config.bf16).to(config.device).eval()
    generator = config.reference_generator or _default_name(config.reference_dir)
    if mt_bench:
        write_json(path, mt_bench_answers(reference, tokenizer, questions, generator=generator, **_mt_bench_sampling(config)))
    else:
        responses = _sample_responses(reference, tokenizer, _model_inputs(config, prompts), **_sampling(config))
        write_json(path, outputs_records(prompts, responses, generator))
    return Path(path)


def run_evaluate(config: EvalConfig, *, gold=None, client=None) -> dict[str, Any]:
    """Sample, judge and score one policy; write outputs, annotations, ``metrics.json`` and ``config.yaml``.

    ``gold`` is the world's gold judge (default: :class:`sepo.world.judge.GoldJudge`); ``client`` an
    OpenAI-compatible client for LLM judges (default: one built from ``base_url`` and the API key).
    Every check (judge and key, prompt set, baseline file, models) runs before anything is sampled, and
    the run directory appears only when the whole run succeeded.

    Metrics by judge: pairwise judges give ``vs_reference`` (and ``vs_baseline``) win rates; ``arena_hard``
    adds ``arena_hard_vs_reference`` / ``arena_hard_vs_baseline`` (Bradley-Terry score with its bootstrap
    interval); single-answer judges give ``score_policy`` / ``score_reference``; ``mt_bench`` gives
    ``mt_bench_policy`` / ``mt_bench_reference`` (per turn and overall) on both turns generated.
    """
    from sepo.trainer import load_causal_lm, load_tokenizer

    # 1. everything that can fail fast, before any generation
    if config.judge == "gold" and gold is None:
        gold = _default_gold()
    judge = build_judge(config.judge, gold=gold, model=config.judge_model or None, client=client,
                        base_url=config.base_url or None, api_key_env=config.api_key_env, seed=config.seed)
    mt_bench = config.judge == "mt_bench"
    if mt_bench:
        questions, reference_answers = _mt_bench_questions(config)
        prompts = [{"index": q["question_id"], "instruction": q["turns"][0], "dataset": f"mt_bench/{q['category']}"}
                   for q in questions]
    else:
        prompts = load_prompt_set(config.prompt_set, limit=config.max_prompts or None)
    baseline_rows = load_outputs(config.baseline_outputs) if config.baseline_outputs else None
    if baseline_rows is not None:
        check_same_instructions(prompts, baseline_rows, ("prompt set", "baseline"))
    reference_rows = None
    if config.reference_outputs and mt_bench:
        reference_rows = load_mt_bench_answers(config.reference_outputs, questions, config.num_samples)
    elif config.reference_outputs:
        reference_rows = load_outputs(config.reference_outputs)
        check_samples_per_prompt(reference_rows, prompts, config.num_samples, config.reference_outputs)
    tokenizer = load_tokenizer(config.model_dir, "model_dir")
    check_same_tokenizer(tokenizer, load_tokenizer(config.reference_dir, "reference_dir"), "policy and reference")
    _check_chat_template(config, tokenizer, config.model_dir)
    policy = load_causal_lm(config.model_dir, "model_dir", bf16=config.bf16).to(config.device).eval()
    reference = load_causal_lm(config.reference_dir, "reference_dir", bf16=config.bf16).to(config.device).eval()
    generator = config.generator or _default_name(config.model_dir)
    reference_generator = config.reference_generator or _default_name(config.reference_dir)

    # 2. sample
    clock = {"start": time.perf_counter()}  # wall clock per step, kept in timing.json (not in metrics.json)
    seed_everything(config.seed)
    model_inputs = _model_inputs(config, prompts)
    policy_responses = None
    if mt_bench:
        policy_rows = mt_bench_answers(policy, tokenizer, questions, generator=generator, **_mt_bench_sampling(config))
        if reference_rows is None:
            reference_rows = mt_bench_answers(reference, tokenizer, questions, generator=reference_generator,
                                              **_mt_bench_sampling(config))
    else:
        policy_responses = _sample_responses(policy, tokenizer, model_inputs, **_sampling(config))
        policy_rows = outputs_records(prompts, policy_responses, generator)
        if reference_rows is None:
            reference_rows = outputs_records(prompts, _sample_responses(reference, tokenizer, model_inputs, **_sampling(config)),
                                             reference_generator)

    # 3. judge
    clock["sampled"] = time.perf_counter()
    n_outputs = len(policy_rows) * config.num_samples * 2 if mt_bench else len(policy_rows)  # MT-Bench: two turns
    metrics: dict[str, Any] = {"judge": judge.name, "n_prompts": len(prompts), "n_outputs": n_outputs}
    if not mt_bench:
        for name, rows in (("policy", policy_rows), ("reference", reference_rows)):
            metrics[f"lengths_{name}"] = sample_lengths(tokenizer, [r["output"] for r in rows], config.max_new_tokens)
    annotations: dict[str, list[dict]] = {}
    if mt_bench:
        for name, rows in (("policy", policy_rows), ("reference", reference_rows)):
            annotations[f"mt_bench_{name}"] = grade_mt_bench(judge, questions, rows, reference_answers)
            metrics[f"mt_bench_{name}"] = mt_bench_scores(annotations[f"mt_bench_{name}"])
    else:
        opponents = {"reference": pair_by_sample(policy_rows, reference_rows)} if hasattr(judge, "compare") else {}
        if baseline_rows is not None and hasattr(judge, "compare"):
            opponents["baseline"] = pair_with_baseline(policy_rows, baseline_rows)
        for opponent, pairs in opponents.items():
            annotations[f"vs_{opponent}"] = annotate_pairs(judge, pairs)
            if config.cutoff_loses:
                annotations[f"vs_{opponent}"] = cut_off_loses(annotations[f"vs_{opponent}"], tokenizer, config.max_new_tokens)
            metrics[f"vs_{opponent}"] = win_rate(annotations[f"vs_{opponent}"])
            if config.judge == "arena_hard":
                metrics[f"arena_hard_vs_{opponent}"] = arena_hard_score(
                    annotations[f"vs_{opponent}"], num_rounds=config.bootstrap_rounds, seed=config.seed)
        if "vs_baseline" in annotations and config.lc_df_gamed_path:
            metrics["vs_baseline_length_controlled"] = length_controlled_win_rate(annotations["vs_baseline"],
                                                                                  config.lc_df_gamed_path)
        if hasattr(judge, "score"):
            for name, rows in (("policy", policy_rows), ("reference", reference_rows)):
                scores = judge.score([r["instruction"] for r in rows], [r["output"] for r in rows])
                parsed = [s for s in scores if not is_missing(s)]
                mean, stderr = mean_and_stderr(parsed)
                metrics[f"score_{name}"] = {"mean": mean, "stderr": stderr, "n": len(parsed),
                                            "n_skipped": len(scores) - len(parsed)}

    # 4. KL to the reference (on the first turns for MT-Bench, with samples of the policy itself)
    clock["judged"] = time.perf_counter()
    if config.estimate_kl:
        kl_responses = policy_responses if config.samples_are_from_policy else None
        metrics["kl"] = estimate_kl(policy, reference, tokenizer, model_inputs, kl_responses,
                                    num_samples=config.num_samples, max_new_tokens=config.max_new_tokens,
                                    seed=config.seed, batch_size=config.batch_size)

    # 5. write everything at once
    clock["kl"] = time.perf_counter()
    with staged_dir(config.out_dir) as tmp:
        write_json(tmp / "timing.json", {"sampling_seconds": clock["sampled"] - clock["start"],
                                         "judging_seconds": clock["judged"] - clock["sampled"],
                                         "kl_seconds": clock["kl"] - clock["judged"]})
        write_json(tmp / "outputs.json", policy_rows)
        write_json(tmp / "reference_outputs.json", reference_rows)
        for name, rows in annotations.items():
            write_json(tmp / f"annotations_{name}.json", rows)
        write_run_record(tmp, config, metrics)
    return metrics
