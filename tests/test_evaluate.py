"""Evaluation: win rates by hand, skips counted, KL log-ratios by hand, a whole run on tiny models."""

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from fake_openai import FakeClient
from sepo.benchmarks import load_alpaca_eval
from sepo.data import tokenize_prompt, tokenize_response
from sepo.errors import ConfigError, DataError
from sepo.evaluate import (
    EvalConfig,
    estimate_kl,
    length_controlled_win_rate,
    load_outputs,
    pair_by_sample,
    pair_with_baseline,
    outputs_records,
    run_evaluate,
    sample_reference_outputs,
    sequence_log_ratios,
    win_rate,
)
from conftest import tiny_llama

PROMPTS = ["review of the soup :", "review of the pizza at luigi 's :", "review of the room :"]


class CountingGold:
    def rewards(self, prompts, responses):
        return [r.count("good") - r.count("bad") for r in responses]


def test_win_rate_by_hand_counts_skips():
    prefs = [2.0, 1.0, 1.5, 2.0, None, float("nan")]
    metrics = win_rate([{"preference": p} for p in prefs])
    wins = np.array([1.0, 0.0, 0.5, 1.0])
    assert metrics["win_rate"] == pytest.approx(62.5)
    assert metrics["standard_error"] == pytest.approx(wins.std(ddof=1) / 2 * 100)
    assert (metrics["n_total"], metrics["n_skipped"], metrics["n_wins"], metrics["n_draws"]) == (4, 2, 2, 1)
    with pytest.raises(DataError, match="all 2 judgements were skipped"):
        win_rate([{"preference": None}, {"preference": None}])
    with pytest.raises(DataError, match="outside"):
        win_rate([{"preference": 3.0}])


def test_win_rate_standard_error_is_over_prompts_when_prompts_have_several_samples():
    rows = [{"index": i, "instruction": f"p{i}", "preference": p}
            for i, prefs in enumerate([(2.0, 2.0), (1.0, 2.0), (1.0, 1.0), (1.5, None)]) for p in prefs]
    metrics = win_rate(rows)
    per_prompt = np.array([1.0, 0.5, 0.0, 0.5])  # prompt 3: its one parsed judgement
    assert metrics["win_rate"] == pytest.approx(100 * 3.5 / 7) and metrics["n_prompts"] == 4
    assert metrics["standard_error"] == pytest.approx(per_prompt.std(ddof=1) / 2 * 100)
    wins = np.array([1, 1, 0, 1, 0, 0, 0.5])
    assert metrics["standard_error_rows"] == pytest.approx(wins.std(ddof=1) / math.sqrt(7) * 100)


def test_outputs_layout_and_pairing_errors(tmp_path):
    prompts = [{"index": i, "instruction": p, "dataset": "world"} for i, p in enumerate(PROMPTS[:2])]
    model = outputs_records(prompts, [["a", "b"], ["c", "d"]], "policy")
    assert model[1] == {"instruction": PROMPTS[0], "output": "b", "generator": "policy", "dataset": "world", "index": 0, "sample": 1}
    reference = outputs_records(prompts, [["r0", "r1"], ["r2", "r3"]], "sft")
    pairs = pair_by_sample(model, reference)
    assert [(p["output_1"], p["output_2"]) for p in pairs] == [("r0", "a"), ("r1", "b"), ("r2", "c"), ("r3", "d")]
    baseline = [{"instruction": PROMPTS[0], "output": "x", "generator": "base"}]
    with pytest.raises(DataError, match=r"different instructions: 1 only in model"):
        pair_with_baseline(model, baseline)
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "x", "generator": "g"}, {"instruction": "b", "generator": "g"}]))
    with pytest.raises(DataError, match=r"row 1: missing field 'output'"):
        load_outputs(path)


def _manual_response_logp(model, tokenizer, prompt, response_ids):
    ids = tokenize_prompt(tokenizer, prompt) + response_ids
    logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)  # (T, V)
    start = len(ids) - len(response_ids)
    return sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids)))


def test_sequence_log_ratios_match_hand_computation(tokenizer, model_pair):
    policy, reference = model_pair
    responses = [" the soup was fine .", " a wonderful , friendly place ; terrible parking though ."]
    ratios = sequence_log_ratios(policy, reference, tokenizer, PROMPTS[:2], responses, batch_size=2)
    for prompt, response, ratio in zip(PROMPTS, responses, ratios):
        ids, _ = tokenize_response(tokenizer, response)  # ends with EOS: generation stopped by itself
        expected = _manual_response_logp(policy, tokenizer, prompt, ids) - _manual_response_logp(reference, tokenizer, prompt, ids)
        assert ratio == pytest.approx(expected, abs=1e-4)
    # cut by the length limit: the first max_new_tokens tokens, no EOS term
    ids, _ = tokenize_response(tokenizer, responses[1])
    cut = sequence_log_ratios(policy, reference, tokenizer, PROMPTS[1:2], responses[1:], max_new_tokens=len(ids) - 1)[0]
    expected = (_manual_response_logp(policy, tokenizer, PROMPTS[1], ids[:-1])
                - _manual_response_logp(reference, tokenizer, PROMPTS[1], ids[:-1]))
    assert cut == pytest.approx(expected, abs=1e-4)
    assert sequence_log_ratios(policy, policy, tokenizer, PROMPTS[:2], responses) == [0.0, 0.0]


def test_estimate_kl_averages_within_then_across_prompts(tokenizer, model_pair):
    policy, reference = model_pair
    responses = [[" the soup was fine .", " the soup was not bad ."], [" i did not like the dessert at all ."]]
    out = estimate_kl(policy, reference, tokenizer, PROMPTS[:2], responses, max_new_tokens=32)
    r = sequence_log_ratios(policy, reference, tokenizer, [PROMPTS[0]] * 2 + [PROMPTS[1]], responses[0] + responses[1])
    per_prompt = [(r[0] + r[1]) / 2, r[2]]
    assert out["kl"] == pytest.approx(np.mean(per_prompt), abs=1e-5)
    assert out["kl_stderr"] == pytest.approx(np.std(per_prompt, ddof=1) / math.sqrt(2), abs=1e-5)
    assert (out["n_prompts"], out["n_samples"]) == (2, 3)
    assert estimate_kl(policy, policy, tokenizer, PROMPTS[:2], responses, max_new_tokens=32)["kl"] == 0.0


def test_length_controlled_win_rate_reads_a_local_copy(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="df_gamed.csv"):
        length_controlled_win_rate([{"preference": 2.0}], tmp_path / "missing.csv")
    rng = np.random.default_rng(0)
    n = 805
    difficulty = rng.normal(size=n)
    gamed = pd.concat([pd.DataFrame({
        "index": np.arange(n), "instruction_difficulty": difficulty, "preference": rng.uniform(0, 1, n),
        "std_delta_len": rng.normal(size=n) * scale, "not_gamed_baseline": False, "model": name,
    }) for name, scale in (("verbose", 1.0), ("concise", -1.0))], ignore_index=True)
    path = tmp_path / "df_gamed.csv"
    gamed.to_csv(path, index=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = load_alpaca_eval()
    annotations = [{"instruction": r["instruction"], "index": r["index"], "output_1": "x" * int(rng.integers(5, 50)),
                    "output_2": "y" * int(rng.integers(5, 50)), "generator_1": "base", "generator_2": "model",
                    "preference": float(rng.choice([1.0, 2.0]))} for r in rows]
    annotations[10]["preference"] = None
    metrics = length_controlled_win_rate(annotations, path)
    assert 0 < metrics["length_controlled_winrate"] < 100 and metrics["n_skipped"] == 1 and metrics["n_total"] == 804
    annotations[3]["index"] = 4
    with pytest.raises(DataError, match="annotation row 3: index 4"):
        length_controlled_win_rate(annotations, path)


# --------------------------------------------------------------------------------------------
# A whole run on tiny saved models, with a scripted sampler
# --------------------------------------------------------------------------------------------
class ScriptedSampler:
    """The policy answers 'good' on even samples and 'bad' on odd ones; the reference always 'bad'."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, tokenizer, prompts, *, num_samples, max_new_tokens, temperature, top_p, seed, batch_size):
        self.calls.append(model.name_or_path)
        is_policy = model.name_or_path.endswith("policy")
        return [[" the soup was very good ." if is_policy and j % 2 == 0 else " the soup was bad ."
                 for j in range(num_samples)] for _ in prompts]


@pytest.fixture
def run_setup(tmp_path, tokenizer, monkeypatch):
    for seed, name in ((1, "policy"), (2, "sft")):
        model = tiny_llama(len(tokenizer), seed=seed)
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"instruction": p}) + "\n" for p in PROMPTS))
    sampler = ScriptedSampler()
    monkeypatch.setattr("sepo.evaluate._sample_responses", sampler)
    config = EvalConfig(model_dir=str(tmp_path / "policy"), reference_dir=str(tmp_path / "sft"), prompt_set=str(prompts),
                        num_samples=2, max_new_tokens=16, out_dir=str(tmp_path / "run"), generator="policy",
                        reference_generator="sft")
    return config, sampler, tmp_path


def test_run_evaluate_writes_alpaca_eval_layout_and_metrics(run_setup):
    config, sampler, tmp_path = run_setup
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps([{"instruction": p, "output": "fine", "generator": "fixed"} for p in PROMPTS]))
    config.baseline_outputs = str(baseline)
    metrics = run_evaluate(config, gold=CountingGold())
    run = tmp_path / "run"
    outputs = json.loads((run / "outputs.json").read_text())
    assert len(outputs) == 6 and {"instruction", "output", "generator", "dataset"} <= set(outputs[0])
    # vs the SFT model: (good vs bad) -> 2, (bad vs bad) -> 1.5 on every prompt
    assert metrics["vs_reference"]["win_rate"] == pytest.approx(75.0)
    # two samples per prompt are not independent: the standard error is over the 3 prompts (each 0.75)
    assert metrics["vs_reference"]["standard_error"] == pytest.approx(0.0) and metrics["vs_reference"]["n_prompts"] == 3
    assert metrics["vs_reference"]["standard_error_rows"] == pytest.approx(np.std([1, .5] * 3, ddof=1) / math.sqrt(6) * 100)
    # vs the fixed baseline (reward 0): good -> 2, bad -> 1
    assert metrics["vs_baseline"]["win_rate"] == pytest.approx(50.0) and metrics["vs_baseline"]["n_skipped"] == 0
    assert metrics["score_policy"]["mean"] == pytest.approx(0.0) and metrics["score_reference"]["mean"] == pytest.approx(-1.0)
    assert metrics["kl"]["n_samples"] == 6 and sampler.calls == [config.model_dir, config.reference_dir]
    annotations = json.loads((run / "annotations_vs_reference.json").read_text())
    assert annotations[0]["generator_1"] == "sft" and annotations[0]["generator_2"] == "policy"
    assert annotations[0]["preference"] == 2.0 and annotations[0]["annotator"] == "gold"
    assert json.loads((run / "metrics.json").read_text())["vs_reference"]["n_total"] == 6
    assert EvalConfig.from_yaml(run / "config.yaml") == config


def test_run_evaluate_draws_policy_samples_for_kl_when_sampling_is_tempered(run_setup):
    config, sampler, _ = run_setup
    config.temperature = 0.7
    run_evaluate(config, gold=CountingGold())
    assert sampler.calls == [config.model_dir, config.reference_dir, config.model_dir]


def test_run_evaluate_fails_before_sampling_and_writes_nothing(run_setup, monkeypatch):
    config, sampler, tmp_path = run_setup
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config.judge = "arena_hard"
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        run_evaluate(config)
    config.judge = "gold"
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps([{"instruction": PROMPTS[0], "output": "fine", "generator": "fixed"}]))
    config.baseline_outputs = str(baseline)
    with pytest.raises(DataError, match="different instructions"):
        run_evaluate(config, gold=CountingGold())
    assert sampler.calls == [] and not (tmp_path / "run").exists()


def test_run_evaluate_reuses_reference_samples_written_beforehand(run_setup):
    config, sampler, tmp_path = run_setup
    sampled = run_evaluate(config, gold=CountingGold())
    path = sample_reference_outputs(config, tmp_path / "reference.json")
    assert sampler.calls == [config.model_dir, config.reference_dir, config.reference_dir]
    sampler.calls.clear()
    reuse = dataclasses.replace(config, reference_outputs=str(path), out_dir=str(tmp_path / "reused"))
    reused = run_evaluate(reuse, gold=CountingGold())
    assert sampler.calls == [config.model_dir]  # only the policy is sampled
    for name in ("vs_reference", "score_reference", "score_policy", "kl"):
        assert reused[name] == sampled[name]
    assert (json.loads((tmp_path / "reused" / "reference_outputs.json").read_text())
            == json.loads((tmp_path / "run" / "reference_outputs.json").read_text()))


def test_run_evaluate_refuses_reference_samples_that_do_not_fit_the_prompts(run_setup):
    config, sampler, tmp_path = run_setup
    path = sample_reference_outputs(config, tmp_path / "reference.json")
    rows = json.loads(path.read_text())
    sampler.calls.clear()
    config.reference_outputs = str(path)
    path.write_text(json.dumps(rows[:-1]))  # the last prompt's second sample is missing
    with pytest.raises(DataError, match=r"1 sample\(s\) missing, e.g. sample 1 of prompt 2"):
        run_evaluate(config, gold=CountingGold())
    path.write_text(json.dumps(rows + rows[:1]))
    with pytest.raises(DataError, match="row 6: sample 0 of prompt 0 appears twice"):
        run_evaluate(config, gold=CountingGold())
    config.num_samples = 1
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match="row 1: sample 1 of prompt 0 is not one of the 1 sample"):
        run_evaluate(config, gold=CountingGold())
    assert sampler.calls == [] and not (tmp_path / "run").exists()


def test_run_evaluate_with_an_llm_judge_counts_unparseable_answers(run_setup):
    config, _, tmp_path = run_setup
    config.judge = "arena_hard"
    config.estimate_kl = False
    replies = iter(["[[B>A]]", "[[B>A]]"] + ["no verdict"] * 100)
    client = FakeClient(lambda kwargs: next(replies))
    metrics = run_evaluate(config, client=client)
    # first pair: model wins as B, then A is the model and the judge says B>A (baseline wins): 1 + 1/2
    assert metrics["vs_reference"]["n_total"] == 1 and metrics["vs_reference"]["n_skipped"] == 5
    assert metrics["vs_reference"]["win_rate"] == pytest.approx(50.0)
    annotations = json.loads((tmp_path / "run" / "annotations_vs_reference.json").read_text())
    assert [a["preference"] for a in annotations] == [1.5, None, None, None, None, None]


def test_eval_config_validation():
    with pytest.raises(ConfigError, match="judge"):
        EvalConfig(model_dir="m", reference_dir="r", prompt_set="alpaca_eval", judge="gpt4")
    with pytest.raises(ConfigError, match="lc_df_gamed_path"):
        EvalConfig(model_dir="m", reference_dir="r", prompt_set="arena_hard", lc_df_gamed_path="x.csv")
    with pytest.raises(ConfigError, match="top_p"):
        EvalConfig(model_dir="m", reference_dir="r", prompt_set="alpaca_eval", top_p=0.0)
    with pytest.raises(ConfigError, match="device"):
        EvalConfig(model_dir="m", reference_dir="r", prompt_set="alpaca_eval", device="gpu0")


def test_run_evaluate_chat_template_sends_user_messages(run_setup, tokenizer):
    config, sampler, tmp_path = run_setup
    config.chat_template = True
    with pytest.raises(ConfigError, match="has no chat template"):
        run_evaluate(config, gold=CountingGold())
    assert sampler.calls == [] and not (tmp_path / "run").exists()
    template = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    for name in ("policy", "sft"):
        tok = type(tokenizer).from_pretrained(str(tmp_path / name))
        tok.chat_template = template
        tok.save_pretrained(tmp_path / name)
    seen = []
    original = sampler.__call__
    sampler_inputs = lambda model, tokenizer, prompts, **kw: (seen.append(prompts), original(model, tokenizer, prompts, **kw))[1]
    import sepo.evaluate as evaluate_module

    evaluate_module._sample_responses, saved = sampler_inputs, evaluate_module._sample_responses
    try:
        metrics = run_evaluate(config, gold=CountingGold())
    finally:
        evaluate_module._sample_responses = saved
    assert seen[0][0] == [{"role": "user", "content": PROMPTS[0]}]
    outputs = json.loads((tmp_path / "run" / "outputs.json").read_text())
    assert outputs[0]["instruction"] == PROMPTS[0] and metrics["kl"]["n_samples"] == 6


def test_reward_kl_frontier_one_row_per_checkpoint(run_setup, tokenizer, model_pair, monkeypatch):
    from sepo.evaluate import reward_kl_frontier

    config, sampler, tmp_path = run_setup
    policy, reference = model_pair
    policy.name_or_path = "in-memory/policy"
    frame = reward_kl_frontier([("dpo", 0, reference), ("dpo", 10, policy), ("sepo", 10, config.model_dir)],
                               reference, tokenizer, PROMPTS, CountingGold(), num_samples=2, max_new_tokens=16)
    assert list(frame.columns) == ["method", "step", "kl", "kl_stderr", "reward", "reward_stderr", "n_prompts"]
    assert frame["kl"].iloc[0] == 0.0 and frame["reward"].iloc[0] == pytest.approx(-1.0)
    assert frame["reward"].iloc[1] == pytest.approx(0.0) and frame["reward_stderr"].iloc[1] == pytest.approx(0.0)
    responses = [[" the soup was very good .", " the soup was bad ."]] * 3
    expected = estimate_kl(policy, reference, tokenizer, PROMPTS, responses, max_new_tokens=16)
    assert frame["kl"].iloc[1] == pytest.approx(expected["kl"]) and frame["n_prompts"].tolist() == [3, 3, 3]
