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
instructions, in their original order, from a local copy of AlpacaEval's ``df_gamed.csv``.

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

from sepo.benchmarks import ALPACA_EVAL_SIZE, load_alpaca_eval, load_prompt_set
from sepo.config import StageConfig, help_field
from sepo.data import build_sequences, check_same_tokenizer, tokenize_prompt, tokenize_response
from sepo.errors import ConfigError, DataError
from sepo.judges import JUDGES, build_judge, is_missing
from sepo.logprobs import token_logps
from sepo.utils import seed_everything, staged_dir, write_json, write_run_record

OUTPUT_FIELDS = ("instruction", "output", "generator")


def _sample_responses(model, tokenizer, prompts, **kwargs) -> list[list[str]]:
    """The package's sampler (:func:`sepo.generation.sample_responses`)."""
    from sepo.generation import sample_responses

    return sample_responses(model, tokenizer, prompts, **kwargs)


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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


def load_outputs(path: str | Path) -> list[dict]:
    """An outputs file in AlpacaEval's layout (JSON list); a row missing a field is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"outputs file not found: {path}")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: expected a non-empty JSON list of rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i} is a {type(row).__name__}, expected an object")
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


def length_controlled_win_rate(annotations: Sequence[dict] | pd.DataFrame, df_gamed_path: str | Path,
                               benchmark_root: str | Path | None = None) -> dict[str, float]:
    """AlpacaEval 2's length-controlled win rate, from a local copy of AlpacaEval's ``df_gamed.csv``.

    alpaca_eval fetches that file from the hub on every call; here it is read from ``df_gamed_path``
    instead and nothing is downloaded. The GLM looks each instruction's difficulty up by its index in
    AlpacaEval's order, so every row's ``index`` must point at its own instruction among the 805.
    """
    path = Path(df_gamed_path) if df_gamed_path else None
    if path is None or not path.is_file():
        raise ConfigError(
            f"the length-controlled win rate needs a local copy of AlpacaEval's df_gamed.csv "
            f"(dataset tatsu-lab/alpaca_eval on the Hugging Face hub); got {str(df_gamed_path)!r}"
        )
    frame, n_skipped = _judged_frame(annotations)
    reference = {r["index"]: r["instruction"] for r in load_alpaca_eval(benchmark_root)}
    for i, row in frame.iterrows():
        if reference.get(row.get("index")) != row["instruction"]:
            raise DataError(f"annotation row {i}: index {row.get('index')!r} is not this instruction's position among "
                            f"AlpacaEval's {ALPACA_EVAL_SIZE} (the length-controlled rate needs the original order)")
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
# KL(policy || reference)
# --------------------------------------------------------------------------------------------
def _response_ids(tokenizer, response: str, max_new_tokens: int | None) -> list[int]:
    """Response ids as sampled: EOS only if generation stopped by itself before ``max_new_tokens``."""
    ids, _ = tokenize_response(tokenizer, response)
    if max_new_tokens is not None and len(ids) - 1 >= max_new_tokens:
        ids = ids[:max_new_tokens]  # cut by the length limit: no EOS was sampled
    return ids


@torch.inference_mode()
def sequence_log_ratios(policy, reference, tokenizer, prompts: Sequence[str], responses: Sequence[str], *,
                        max_new_tokens: int | None = None, batch_size: int = 16) -> list[float]:
    """``sum_t [log pi(y_t) - log ref(y_t)]`` over each response's tokens (one value per pair)."""
    if len(prompts) != len(responses):
        raise DataError(f"{len(prompts)} prompts for {len(responses)} responses")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        prompt_ids = [tokenize_prompt(tokenizer, p) for p in prompts[start : start + batch_size]]
        response_ids = [_response_ids(tokenizer, r, max_new_tokens) for r in responses[start : start + batch_size]]
        batch = build_sequences(prompt_ids, response_ids, pad_id)
        device = next(policy.parameters()).device
        mask = batch["response_mask"].to(device)  # (B, T-1): positions scoring response tokens
        args = (batch["input_ids"].to(device), batch["attention_mask"].to(device), mask)
        ratio = token_logps(policy, *args) - token_logps(reference, *args)  # (B, T-1), zero off the mask
        out.extend((ratio * mask).sum(-1).tolist())
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
# The stage
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class EvalConfig(StageConfig):
    """Parameters of one evaluation run (also the papermill parameters of its notebook)."""

    model_dir: str = help_field("", help="directory of the policy to evaluate (a saved causal LM with its tokenizer)")
    reference_dir: str = help_field("", help="directory of the SFT/reference model: the first opponent and the KL anchor")
    generator: str = help_field("", help="name of the evaluated model in the outputs (default: model_dir's last parts)")
    reference_generator: str = help_field("", help="name of the reference model in the outputs (default: from reference_dir)")
    prompt_set: str = help_field("", help="alpaca_eval, arena_hard, mt_bench (first turns) or a .json/.jsonl file of instructions")
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
    chat_template: bool = help_field(False, help="send each instruction as a user message through the tokenizer's "
                                               "chat template (as the policy saw its training prompts)")
    device: str = help_field("cpu", help="device of the policy and reference while sampling and scoring ('cuda', 'cuda:1', ...)")
    bf16: bool = help_field(False, help="load the policy and the reference in bfloat16")
    lc_df_gamed_path: str = help_field("", help="local copy of AlpacaEval's df_gamed.csv for the length-controlled win rate ('' : skip)")
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


def sample_reference_outputs(config: EvalConfig, path: str | Path) -> Path:
    """Write the reference model's samples exactly as :func:`run_evaluate` would draw them, for ``reference_outputs``.

    Sampling is seeded per call, so these are the samples an evaluation with the same prompts and
    sampling fields draws from ``reference_dir``; evaluations of several policies against one
    reference (a table's rows) then share one set of reference samples instead of redrawing it.
    """
    from sepo.trainer import load_causal_lm, load_tokenizer

    prompts = load_prompt_set(config.prompt_set, limit=config.max_prompts or None)
    tokenizer = load_tokenizer(config.reference_dir, "reference_dir")
    _check_chat_template(config, tokenizer, config.reference_dir)
    reference = load_causal_lm(config.reference_dir, "reference_dir", bf16=config.bf16).to(config.device).eval()
    responses = _sample_responses(reference, tokenizer, _model_inputs(config, prompts), **_sampling(config))
    write_json(path, outputs_records(prompts, responses, config.reference_generator or _default_name(config.reference_dir)))
    return Path(path)


def run_evaluate(config: EvalConfig, *, gold=None, client=None) -> dict[str, Any]:
    """Sample, judge and score one policy; write outputs, annotations, ``metrics.json`` and ``config.yaml``.

    ``gold`` is the world's gold judge (default: :class:`sepo.world.judge.GoldJudge`); ``client`` an
    OpenAI-compatible client for LLM judges (default: one built from ``base_url`` and the API key).
    Every check (judge and key, prompt set, baseline file, models) runs before anything is sampled, and
    the run directory appears only when the whole run succeeded.
    """
    from sepo.trainer import load_causal_lm, load_tokenizer

    # 1. everything that can fail fast, before any generation
    if config.judge == "gold" and gold is None:
        gold = _default_gold()
    judge = build_judge(config.judge, gold=gold, model=config.judge_model or None, client=client,
                        base_url=config.base_url or None, api_key_env=config.api_key_env, seed=config.seed)
    prompts = load_prompt_set(config.prompt_set, limit=config.max_prompts or None)
    baseline_rows = load_outputs(config.baseline_outputs) if config.baseline_outputs else None
    if baseline_rows is not None:
        check_same_instructions(prompts, baseline_rows, ("prompt set", "baseline"))
    reference_rows = load_outputs(config.reference_outputs) if config.reference_outputs else None
    if reference_rows is not None:
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
    sampling = _sampling(config)
    policy_responses = _sample_responses(policy, tokenizer, model_inputs, **sampling)
    policy_rows = outputs_records(prompts, policy_responses, generator)
    if reference_rows is None:
        reference_rows = outputs_records(prompts, _sample_responses(reference, tokenizer, model_inputs, **sampling),
                                         reference_generator)

    # 3. judge
    clock["sampled"] = time.perf_counter()
    metrics: dict[str, Any] = {"judge": judge.name, "n_prompts": len(prompts), "n_outputs": len(policy_rows)}
    annotations: dict[str, list[dict]] = {}
    if hasattr(judge, "compare"):
        annotations["vs_reference"] = annotate_pairs(judge, pair_by_sample(policy_rows, reference_rows))
        metrics["vs_reference"] = win_rate(annotations["vs_reference"])
        if baseline_rows is not None:
            annotations["vs_baseline"] = annotate_pairs(judge, pair_with_baseline(policy_rows, baseline_rows))
            metrics["vs_baseline"] = win_rate(annotations["vs_baseline"])
            if config.lc_df_gamed_path:
                metrics["vs_baseline_length_controlled"] = length_controlled_win_rate(
                    annotations["vs_baseline"], config.lc_df_gamed_path)
    if hasattr(judge, "score"):
        for name, rows in (("policy", policy_rows), ("reference", reference_rows)):
            scores = judge.score([r["instruction"] for r in rows], [r["output"] for r in rows])
            parsed = [s for s in scores if not is_missing(s)]
            mean, stderr = mean_and_stderr(parsed)
            metrics[f"score_{name}"] = {"mean": mean, "stderr": stderr, "n": len(parsed),
                                        "n_skipped": len(scores) - len(parsed)}

    # 4. KL to the reference
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
            write_json(tmp / f"annotations_{name}.json", finite_or_none(rows))
        write_run_record(tmp, config, finite_or_none(metrics))
    return metrics
