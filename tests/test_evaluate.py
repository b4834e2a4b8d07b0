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
    with pytest.raises(DataError, match=r"annotations: row 3: field 'index' \(4\)"):
        length_controlled_win_rate(annotations, path)
    annotations[3]["index"] = 3

    # AlpacaEval's own annotation file has no index: its rows are read in AlpacaEval's order
    official = tmp_path / "annotations.json"
    official.write_text(json.dumps([{k: v for k, v in row.items() if k != "index"} for row in annotations]))
    assert length_controlled_win_rate(official, path) == pytest.approx(metrics)
    swapped = [{k: v for k, v in row.items() if k != "index"} for row in annotations]
    swapped[5], swapped[6] = swapped[6], swapped[5]
    official.write_text(json.dumps(swapped))
    with pytest.raises(DataError, match=rf"{official}: row 5: field 'instruction' is not AlpacaEval's instruction 5"):
        length_controlled_win_rate(official, path)


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


# --------------------------------------------------------------------------------------------
# Arena-Hard: Bradley-Terry against the baseline with bootstrap intervals
# --------------------------------------------------------------------------------------------
def _arena_rows(verdicts, model="policy", baseline="gpt-4-0314"):
    return [{"instruction": f"q{i}", "index": i, "generator_1": baseline, "generator_2": model, "verdicts": list(v)}
            for i, v in enumerate(verdicts)]


def test_arena_hard_battles_follow_get_battles_from_row():
    from sepo.evaluate import arena_hard_battles

    # game 1: the baseline is A; game 2: the model is A
    battles, skipped = arena_hard_battles(_arena_rows([("B>>A", "A>B"), ("A=B", None), ("A<B", "B>>A")]))
    assert battles["winner"].tolist() == ["model_b"] * 4 + ["tie"] + ["model_a"] * 3
    assert skipped == 2  # no verdict, and 'A<B' which arena-hard-auto does not count
    assert set(battles["model_a"]) == {"gpt-4-0314"} and set(battles["model_b"]) == {"policy"}


def test_bradley_terry_score_is_the_pooled_win_rate_against_the_baseline_with_a_seeded_bootstrap():
    from sepo.evaluate import arena_hard_score

    # wins 1 (B>A as B), ties 1, losses 3 (A>>B with the baseline as A) + 1 (B>A with the baseline as B)
    verdicts = [("B>A", "A=B"), ("A>>B", "B>A")] * 20
    out = arena_hard_score(_arena_rows(verdicts), num_rounds=20, seed=3)
    assert out["score"] == pytest.approx(25.0, abs=1e-3)  # Bradley-Terry against one opponent: (1 + 0.5) / 6
    assert out["n_battles"] == 120 and out["n_questions"] == 40 and out["baseline"] == "gpt-4-0314"
    # the interval by hand: resample the battles, each round's fit is its pooled win rate, percentiles of Elo
    rng = np.random.default_rng(3)
    won = np.array(([1.0, 0.5] + [0.0] * 4) * 20)
    rates = np.array([won[rng.integers(0, 120, 120)].mean() for _ in range(20)])
    low, high = np.percentile(400 * np.log10(rates / (1 - rates)), [2.5, 97.5])
    assert out["lower"] == pytest.approx(100 / (1 + 10 ** (-low / 400)), abs=1e-2)
    assert out["upper"] == pytest.approx(100 / (1 + 10 ** (-high / 400)), abs=1e-2)
    assert out["lower"] < out["score"] < out["upper"]
    assert arena_hard_score(_arena_rows(verdicts), num_rounds=20, seed=3) == out  # same seed, same interval
    assert arena_hard_score(_arena_rows(verdicts), num_rounds=20, seed=4)["lower"] != out["lower"]


def test_bradley_terry_leaderboard_fits_several_models_and_handles_a_clean_sweep():
    from sepo.evaluate import arena_hard_battles, arena_hard_leaderboard, arena_hard_score

    rows = _arena_rows([("B>A", "A>B"), ("A>B", "B>A"), ("B>A", "B>A")], model="m1") + \
        _arena_rows([("B>>A", "A>>B")] * 3, model="m2")
    battles, _ = arena_hard_battles(rows)
    board = arena_hard_leaderboard(battles, "gpt-4-0314", num_rounds=20).set_index("model")
    assert board.loc["m1", "score"] == pytest.approx(50.0, abs=1e-3)  # 3 wins, 3 losses
    assert board.loc["m2", "score"] == pytest.approx(100.0) and board.loc["m2", "upper"] == pytest.approx(100.0)
    assert board.loc["gpt-4-0314", "score"] == pytest.approx(50.0)
    with pytest.raises(DataError, match="'generator_2' must name one model"):
        arena_hard_score(rows)
    with pytest.raises(DataError, match="row 0: field 'verdicts'"):
        arena_hard_score([{"generator_1": "b", "generator_2": "m", "verdicts": "B>A"}])
    with pytest.raises(DataError, match="no battle"):
        arena_hard_score(_arena_rows([(None, None)]))


# --------------------------------------------------------------------------------------------
# MT-Bench: two turns, the second after the model's own first answer; scores per turn
# --------------------------------------------------------------------------------------------
QUESTIONS = [{"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Make it shorter."]},
             {"question_id": 111, "category": "math", "turns": ["1+1?", "And 2+2?"]}]


def test_mt_bench_second_turn_follows_the_models_own_first_answer(monkeypatch):
    from sepo.evaluate import mt_bench_answers

    calls = []

    def sampler(model, tokenizer, prompts, *, num_samples, temperature, seed, **_):
        calls.append((prompts, num_samples, temperature, seed))
        return [[f"answer {len(calls)}.{i}.{j}" for j in range(num_samples)] for i in range(len(prompts))]

    monkeypatch.setattr("sepo.evaluate._sample_responses", sampler)
    answers = mt_bench_answers(None, None, QUESTIONS, generator="policy", num_samples=2)
    # FastChat's temperatures: math greedy (0.0) first, then writing (0.7); two calls (turn 1, turn 2) each
    assert [(c[1], c[2]) for c in calls] == [(2, 0.0), (1, 0.0), (2, 0.7), (1, 0.7)]
    math_turn_2 = calls[1][0]
    assert math_turn_2[1] == [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "answer 1.0.1"},
                              {"role": "user", "content": "And 2+2?"}]
    assert answers[1] == {"question_id": 111, "category": "math", "model_id": "policy", "choices": [
        {"index": 0, "turns": ["answer 1.0.0", "answer 2.0.0"]}, {"index": 1, "turns": ["answer 1.0.1", "answer 2.1.0"]}]}
    assert answers[0]["choices"][1]["turns"] == ["answer 3.0.1", "answer 4.1.0"]
    mt_bench_answers(None, None, QUESTIONS, generator="policy", temperature=1.0)
    assert [c[2] for c in calls[4:]] == [1.0, 1.0]  # one group at the config's temperature


def test_mt_bench_scores_by_turn_and_overall():
    from sepo.evaluate import mt_bench_scores

    rows = [{"question_id": q, "category": c, "turn": t, "sample": 0, "score": s} for q, c, t, s in [
        (81, "writing", 1, 8.0), (81, "writing", 2, 6.0), (111, "math", 1, 4.0), (111, "math", 2, None),
        (112, "math", 1, 2.0), (112, "math", 2, 3.0)]]
    out = mt_bench_scores(rows)
    assert out["turn_1"]["mean"] == pytest.approx(14 / 3) and out["turn_1"]["n_skipped"] == 0
    assert out["turn_1"]["stderr"] == pytest.approx(np.std([8, 4, 2], ddof=1) / math.sqrt(3))
    assert out["turn_2"]["mean"] == pytest.approx(4.5) and out["turn_2"]["n_skipped"] == 1 and out["turn_2"]["n_questions"] == 2
    assert out["overall"]["mean"] == pytest.approx(23 / 5)  # FastChat: the mean of every graded row
    assert out["overall"]["stderr"] == pytest.approx(np.std([7, 4, 2.5], ddof=1) / math.sqrt(3))
    assert out["by_category"] == {"math": pytest.approx(3.0), "writing": pytest.approx(7.0)}


def test_mt_bench_config_needs_a_chat_template_and_no_baseline():
    with pytest.raises(ConfigError, match="chat_template.*two-turn chat"):
        EvalConfig(model_dir="m", reference_dir="r", prompt_set="mt_bench", judge="mt_bench")
    with pytest.raises(ConfigError, match="prompt_set.*MT-Bench questions"):
        EvalConfig(model_dir="m", reference_dir="r", prompt_set="alpaca_eval", judge="mt_bench", chat_template=True)
    with pytest.raises(ConfigError, match="baseline_outputs"):
        EvalConfig(model_dir="m", reference_dir="r", prompt_set="mt_bench", judge="mt_bench", chat_template=True,
                   baseline_outputs="b.json")


# --------------------------------------------------------------------------------------------
# The evaluate stage end to end on tiny random chat models, judged by the fake OpenAI-compatible server
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chat_models(tmp_path_factory):
    from training_world import CHAT_TEMPLATE, write_model

    root = tmp_path_factory.mktemp("chat_models")
    return {name: str(write_model(root / name, seed=seed, chat_template=CHAT_TEMPLATE)) for seed, name in ((1, "policy"), (2, "sft"))}


@pytest.fixture
def judge_server(monkeypatch):
    from fake_openai import FakeJudgeServer

    monkeypatch.setenv("FAKE_JUDGE_KEY", "sk-test")
    with FakeJudgeServer() as server:
        yield server


def _llm_config(chat_models, judge_server, tmp_path, **values):
    return EvalConfig(model_dir=chat_models["policy"], reference_dir=chat_models["sft"], generator="policy",
                      reference_generator="sft", chat_template=True, max_new_tokens=8, out_dir=str(tmp_path / "run"),
                      base_url=judge_server.base_url, api_key_env="FAKE_JUDGE_KEY", estimate_kl=False, **values)


def test_mt_bench_end_to_end_two_turns_with_reference_answers(chat_models, judge_server, tmp_path):
    from fake_openai import mt_bench_rating
    from sepo.benchmarks import load_mt_bench_questions, load_mt_bench_reference_answers

    official = {q["question_id"]: q for q in load_mt_bench_questions()}
    questions = tmp_path / "questions.jsonl"  # writing, reasoning and math: the last two graded with reference
    questions.write_text("".join(json.dumps(official[i]) + "\n" for i in (81, 101, 111)))
    config = _llm_config(chat_models, judge_server, tmp_path, judge="mt_bench", prompt_set=str(questions), num_samples=1)
    metrics = run_evaluate(config)

    answers = json.loads((tmp_path / "run" / "outputs.json").read_text())
    assert [a["question_id"] for a in answers] == [81, 101, 111] and all(len(a["choices"][0]["turns"]) == 2 for a in answers)
    references = load_mt_bench_reference_answers()
    calls = judge_server.calls
    assert len(calls) == 12 and {c["model"] for c in calls} == {"gpt-4"} and {c["temperature"] for c in calls} == {0.0}
    policy_calls = calls[:6]  # (question, turn) in order, the policy's answers first
    for k, answer in enumerate(answers):
        first, second = (policy_calls[2 * k + t]["messages"][1]["content"] for t in (0, 1))
        turn_1, turn_2 = answer["choices"][0]["turns"]
        assert f"[The Start of Assistant's Answer]\n{turn_1}\n[The End" in first
        # the second turn is graded on the whole conversation: the model's own first answer, then its second
        assert f"### Assistant A:\n{turn_1}\n\n### User:\n{official[answer['question_id']]['turns'][1]}\n\n### Assistant A:\n{turn_2}\n" in second
        with_reference = answer["question_id"] in (101, 111)
        assert ("[The Start of Reference Answer]" in first) == ("<|The Start of Reference Answer|>" in second) == with_reference
        if with_reference:
            assert references[answer["question_id"]][0] in first and references[answer["question_id"]][1] in second
    judgments = json.loads((tmp_path / "run" / "annotations_mt_bench_policy.json").read_text())
    expected = {(a["question_id"], t + 1): mt_bench_rating(a["choices"][0]["turns"][t]) for a in answers for t in (0, 1)}
    assert {(j["question_id"], j["turn"]): j["score"] for j in judgments} == expected
    assert metrics["mt_bench_policy"]["turn_1"]["mean"] == pytest.approx(np.mean([expected[q, 1] for q in (81, 101, 111)]))
    assert metrics["mt_bench_policy"]["turn_2"]["mean"] == pytest.approx(np.mean([expected[q, 2] for q in (81, 101, 111)]))
    assert metrics["mt_bench_policy"]["overall"]["mean"] == pytest.approx(np.mean(list(expected.values())))
    assert metrics["mt_bench_reference"]["overall"]["n"] == 6 and metrics["n_outputs"] == 6
    # greedy categories (reasoning, math) answer the same way twice: the run is deterministic
    again = run_evaluate(dataclasses.replace(config, out_dir=str(tmp_path / "again")))
    assert again["mt_bench_policy"] == metrics["mt_bench_policy"]


def test_arena_hard_end_to_end_bradley_terry_against_the_baseline(chat_models, judge_server, tmp_path):
    from fake_openai import arena_hard_label
    from sepo.benchmarks import load_prompt_set

    prompts = load_prompt_set("arena_hard", limit=4)
    baseline = tmp_path / "gpt-4-0314.json"
    baseline.write_text(json.dumps([{"instruction": p["instruction"], "output": "a baseline answer .", "generator": "gpt-4-0314"}
                                    for p in prompts]))
    config = _llm_config(chat_models, judge_server, tmp_path, judge="arena_hard", prompt_set="arena_hard", max_prompts=4,
                         baseline_outputs=str(baseline), bootstrap_rounds=20)
    metrics = run_evaluate(config)
    outputs = json.loads((tmp_path / "run" / "outputs.json").read_text())
    assert len(judge_server.calls) == 16  # 4 questions x 2 opponents x 2 games
    assert judge_server.calls[0]["messages"][0]["content"].startswith("Please act as an impartial judge")
    won = []  # the battles by hand, from the fake judge's rule (longer answer wins)
    for row in outputs:
        for game, (a, b) in enumerate((("a baseline answer .", row["output"]), (row["output"], "a baseline answer ."))):
            label = arena_hard_label(a, b)
            model_side = "B" if game == 0 else "A"
            value = 0.5 if label == "A=B" else float(label[0] == model_side)
            won.extend([value] * (3 if ">>" in label else 1))
    score = metrics["arena_hard_vs_baseline"]
    assert score["score"] == pytest.approx(100 * np.mean(won), abs=1e-2) and score["n_battles"] == len(won)
    assert score["lower"] <= score["score"] <= score["upper"] and score["baseline"] == "gpt-4-0314"
    assert metrics["arena_hard_vs_reference"]["baseline"] == "sft"


def test_alpaca_eval_end_to_end_through_the_server(chat_models, judge_server, tmp_path):
    config = _llm_config(chat_models, judge_server, tmp_path, judge="alpaca_eval", prompt_set="alpaca_eval", max_prompts=3)
    metrics = run_evaluate(config)
    annotations = json.loads((tmp_path / "run" / "annotations_vs_reference.json").read_text())
    assert len(annotations) == 3 and metrics["vs_reference"]["n_skipped"] == 0
    for row in annotations:  # the longer output wins with probability 0.9, whichever order the annotator chose
        longer_is_model = len(row["output_2"]) > len(row["output_1"])
        tie = len(row["output_2"]) == len(row["output_1"])
        assert tie or row["preference"] == pytest.approx(1.9 if longer_is_model else 1.1)
    assert metrics["vs_reference"]["win_rate"] == pytest.approx(100 * np.mean([a["preference"] - 1 for a in annotations]))
    assert {c["model"] for c in judge_server.calls} == {"gpt-4-1106-preview"}


def test_llm_judge_without_a_key_stops_before_sampling(chat_models, judge_server, tmp_path, monkeypatch):
    monkeypatch.delenv("FAKE_JUDGE_KEY")
    config = _llm_config(chat_models, judge_server, tmp_path, judge="mt_bench", prompt_set="mt_bench", max_prompts=1)
    with pytest.raises(ConfigError, match="set the environment variable FAKE_JUDGE_KEY"):
        run_evaluate(config)
    assert judge_server.calls == [] and not (tmp_path / "run").exists()


def test_benchmark_rows_and_their_figure(tmp_path):
    from sepo.evaluate import benchmark_rows
    from sepo.plots import benchmark_scores

    arena = {"judge": "arena_hard", "vs_reference": {"win_rate": 55.0, "standard_error": 2.0},
             "arena_hard_vs_reference": {"score": 56.0, "lower": 51.0, "upper": 60.0, "bootstrap_rounds": 100},
             "vs_baseline": {"win_rate": 20.0, "standard_error": 1.0},
             "arena_hard_vs_baseline": {"score": 18.0, "lower": 15.0, "upper": 22.0, "bootstrap_rounds": 100}}
    alpaca = {"judge": "weighted_alpaca_eval_gpt4_turbo", "vs_baseline": {"win_rate": 10.0, "standard_error": 1.0},
              "vs_baseline_length_controlled": {"length_controlled_winrate": 12.0, "lc_standard_error": 0.5}}
    mt = {"judge": "mt_bench", "mt_bench_policy": {t: {"mean": 5.0, "stderr": 0.5} for t in ("turn_1", "turn_2", "overall")}}
    rows = [r for metrics in (arena, alpaca, mt) for model in ("sepo", "dpo") for r in benchmark_rows(metrics, model)]
    frame = pd.DataFrame(rows)
    sepo_rows = frame[frame["model"] == "sepo"].set_index(["benchmark", "metric"])
    assert tuple(sepo_rows.loc[("Arena-Hard", "score vs baseline"), ["score", "lower", "upper"]]) == (18.0, 15.0, 22.0)
    assert sepo_rows.loc[("AlpacaEval 2", "LC win rate vs baseline"), "lower"] == pytest.approx(12.0 - 1.96 * 0.5, abs=1e-3)
    assert sepo_rows.loc[("MT-Bench", "turn 2"), "upper"] == pytest.approx(5.0 + 1.96 * 0.5, abs=1e-3)
    assert len(sepo_rows) == 2 + 2 + 3
    fig = benchmark_scores(frame)
    assert len(fig.axes) == 7 and all(len(ax.lines) >= 2 for ax in fig.axes)
    fig.savefig(tmp_path / "benchmarks.png")


def test_sample_lengths_count_tokens_and_cut_off_samples(tokenizer):
    from sepo.data import tokenize_response
    from sepo.evaluate import sample_lengths

    short, long = "the soup was good .", " ".join(["the soup was good ."] * 20)
    n_short = len(tokenize_response(tokenizer, short)[0]) - 1  # EOS not counted
    n_long = len(tokenize_response(tokenizer, long)[0]) - 1
    limit = n_short + 5
    assert n_long > limit
    out = sample_lengths(tokenizer, [short, long[: len(long)]], limit)
    assert out["mean_tokens"] == pytest.approx((n_short + n_long) / 2) and out["cutoff_share"] == 0.5 and out["n"] == 2
    assert sample_lengths(tokenizer, [short], n_short)["cutoff_share"] == 1.0  # as long as the limit: no EOS was sampled


def test_a_cut_off_sample_loses_to_a_finished_one(tokenizer):
    """The gold judge reads text alone; with cutoff_loses a sample that never ended loses to one that did, and two
    cut-off samples (or two finished ones) keep the judge's verdict."""
    from sepo.evaluate import cut_off, cut_off_loses

    long = " ".join(["good"] * 40)
    assert cut_off(tokenizer, long, 8) and not cut_off(tokenizer, "good .", 8)
    rows = [{"output_1": "good .", "output_2": long, "preference": 2.0},  # the judge liked the run-on text
            {"output_1": long, "output_2": "bad .", "preference": 1.0},
            {"output_1": long, "output_2": long, "preference": 1.5},
            {"output_1": "good .", "output_2": "bad .", "preference": 1.0}]
    out = cut_off_loses(rows, tokenizer, 8)
    assert [r["preference"] for r in out] == [1, 2, 1.5, 1.0]
    assert [r["judge_preference"] for r in out] == [2.0, 1.0, 1.5, 1.0]
    assert [(r["output_1_cut_off"], r["output_2_cut_off"]) for r in out] == [(False, True), (True, False), (True, True),
                                                                            (False, False)]


def test_run_evaluate_with_cutoff_loses_counts_a_run_on_sample_as_lost(run_setup):
    """The scripted policy's good sample runs past max_new_tokens (it never ended): with cutoff_loses it loses to
    the SFT model's finished sample however good its text, and the annotations keep the judge's own verdict."""
    config, sampler, tmp_path = run_setup
    config.max_new_tokens = 8  # " the soup was very good ." (14 tokens) and " the soup was bad ." (8) are cut off
    judged = run_evaluate(config, gold=CountingGold())
    config.cutoff_loses, config.out_dir = True, str(tmp_path / "run_cut")
    ruled = run_evaluate(config, gold=CountingGold())
    assert judged["lengths_policy"]["cutoff_share"] == 1.0 and judged["lengths_reference"]["cutoff_share"] == 1.0
    assert ruled["vs_reference"]["win_rate"] == judged["vs_reference"]["win_rate"]  # both cut off: the judge decides
    config.max_new_tokens, config.out_dir = 9, str(tmp_path / "run_six")  # now only the good sample is cut off
    assert run_evaluate(config, gold=CountingGold())["vs_reference"]["win_rate"] == pytest.approx(25.0)
    annotations = json.loads((tmp_path / "run_six" / "annotations_vs_reference.json").read_text())
    assert {(a["output_2_cut_off"], a["judge_preference"], a["preference"]) for a in annotations} == {
        (True, 2.0, 1), (False, 1.5, 1.5)}


def test_response_ids_of_many_samples_equal_each_encoded_alone(tokenizer):
    """KL and length checks encode all samples in one call; each sample's ids (EOS only when it ended before the
    limit) are those it gets alone."""
    from sepo.data import tokenize_response
    from sepo.evaluate import _response_ids

    samples = ["the soup was good .", " ".join(["good"] * 40), "bad", "the soup ."]
    for limit in (None, 8):
        alone = []
        for s in samples:
            ids = tokenize_response(tokenizer, s)[0]
            alone.append(ids[:limit] if limit is not None and len(ids) - 1 >= limit else ids)
        assert _response_ids(tokenizer, samples, limit) == alone
    assert _response_ids(tokenizer, samples, 8)[1][-1] != tokenizer.eos_token_id  # cut off: no EOS
