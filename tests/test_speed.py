"""Helpers that make the reproduction faster without changing what it computes."""

from __future__ import annotations

import pytest
from datasets import Dataset

from sepo.utils import add_column, select_rows, transform_fingerprint


def test_add_column_and_select_rows_equal_the_datasets_transforms():
    data = Dataset.from_dict({"a": [1, 2, 3]})
    values = [[0.5, 1.5], [], [2.0]]
    ours, theirs = add_column(data, "b", values), data.add_column("b", values)
    assert ours.to_dict() == theirs.to_dict() and ours.features == theirs.features
    assert select_rows(ours, [2, 0]).to_dict() == ours.select([2, 0]).to_dict()


def test_transform_fingerprint_follows_parent_operation_and_content():
    data = Dataset.from_dict({"a": [1, 2, 3]})
    values = [[0.5, 1.5], [], [2.0]]
    first = add_column(data, "b", values)
    assert first._fingerprint == add_column(data, "b", [list(v) for v in values])._fingerprint  # deterministic
    assert first._fingerprint != data._fingerprint
    others = {add_column(data, "b", [[0.5, 1.5], [], [2.5]])._fingerprint, add_column(data, "c", values)._fingerprint,
              transform_fingerprint(data, "select", values), add_column(Dataset.from_dict({"a": [1, 2, 4]}), "b", values)._fingerprint}
    assert first._fingerprint not in others and len(others) == 4
    assert select_rows(data, [0, 1])._fingerprint != select_rows(data, [1, 0])._fingerprint


def test_stage_split_sums_the_runs_timing(tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from stage_split import split_by_stage

    def write(rel: str, data: dict) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))

    write("world/w1/metrics.json", {"timing/text_seconds": 1.0, "timing/sft_a_small_seconds": 10.0,
                                    "timing/sft_a_medium_seconds": 20.0, "timing/sampling_id_seconds": 4.0,
                                    "timing/total_seconds": 35.0, "pairs/id/train": 3})
    write("oracle/o1/timing.json", {"total_seconds": 9.0, "scoring_seconds": 2.0, "train_runtime": 6.0})
    write("policy/p1/timing.json", {"total_seconds": 5.0})
    write("policy/p2/timing.json", {"total_seconds": 6.0})
    write("evaluate/e1/timing.json", {"sampling_seconds": 3.0, "judging_seconds": 1.0, "kl_seconds": 0.5})
    write("evaluate/e1/metrics.json", {})
    write("evaluate/e2/metrics.json", {})  # made by code that did not time evaluations
    out = split_by_stage(tmp_path, total_seconds=100.0)
    assert out["seconds"] == {"world": 5.0, "SFT": 30.0, "oracles": 7.0, "scoring": 2.0, "policies": 11.0,
                              "sampling": 3.0, "judging": 1.0, "KL": 0.5, "notebooks, figures, other": 40.5}
    assert out["runs"]["SFT"] == 2 and out["runs"]["policies"] == 2 and out["evaluations_without_timing"] == 1
    (tmp_path / "policy/p1/frontier_id_128x1_48_0_abc.csv").write_text("method,step,kl\nDPO,0,0.0\nDPO,3,0.1\nDPO,6,0.2\n")
    write("derived/default/heldout/h1.json", {})
    two = split_by_stage(tmp_path, total_seconds=100.0, workers=2)  # two one-thread processes: 200 process-seconds
    assert two["process_seconds"] == 200.0 and two["seconds"]["notebooks, figures, other"] == 140.5
    assert two["untimed"] == {"frontier_traces": 1, "frontier_points": 3, "heldout_diagnostics": 1, "reference_samples": 0}
    import os  # a run written into the same cache after the reproduction ended is not counted
    write("policy/p3/timing.json", {"total_seconds": 7.0})
    os.utime(tmp_path / "policy/p3/timing.json", (2e9, 2e9))
    assert split_by_stage(tmp_path, until=1.9e9)["seconds"]["policies"] == 11.0
    assert split_by_stage(tmp_path)["seconds"]["policies"] == 18.0


def test_stage_section_rows_add_up_to_the_run_and_estimates_come_out_of_the_rest():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from stage_split import STAGES, stage_section

    seconds = {stage: 10.0 for stage in STAGES[:-1]}
    seconds[STAGES[-1]] = 120.0
    split = {"seconds": seconds, "runs": {stage: 1 for stage in STAGES[:-1]}, "total_seconds": 100.0, "workers": 2,
             "process_seconds": 200.0, "untimed": {"frontier_traces": 2, "frontier_points": 10, "heldout_diagnostics": 4,
                                                   "reference_samples": 1},
             "estimated_seconds": {"frontier": 30.0, "heldout_diagnostics": 20.0}}
    lines = stage_section(split)
    rows = {line.split(" | ")[0][2:]: float(line.split(" | ")[1]) for line in lines if line.startswith("| ") and "---" not in line
            and not line.startswith("| stage")}
    assert sum(rows.values()) == 200.0
    assert rows["frontier traces (estimated)"] == 30.0 and rows["notebooks, figures, reference samples, other (the rest)"] == 70.0
    assert "| world | 10 | 5% | 1 run |" in lines
    assert "Pending" in "\n".join(stage_section({}))


def test_compare_runs_counts_differing_numbers_verdicts_and_world_card_targets(tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from compare_runs import compare, compare_files, render

    assert compare_files({"a": 1.0, "b": [2.0, "x"]}, {"a": 1.0, "b": [2.5, "y"]}) == {
        "numbers": 2, "numbers_differ": 1, "largest_relative_difference": 0.2, "other_leaves": 1, "other_leaves_differ": 1}
    for name, verdict, accuracy in (("a", "holds", 0.73), ("b", "inconclusive", 0.71)):
        root = tmp_path / name
        (root / "04_main_table").mkdir(parents=True)
        (root / "04_main_table" / "metrics.json").write_text(json.dumps({"win": accuracy, "n": 5}))
        (root / "reproduce_timing.json").write_text(json.dumps({"seconds": accuracy}))  # a clock, not a result
        (root / "claims.json").write_text(json.dumps({"project": "p", "numerics": "k", "claims": {
            "C1": {"verdict": verdict}, "C2": {"verdict": "holds"}}}))
        (root / "world_card.json").write_text(json.dumps({"oracle_heldout_accuracy": {
            "value": accuracy, "met": accuracy >= 0.72, "target": ">= 0.72"}}))
    out = compare(tmp_path / "a", tmp_path / "b")
    assert out["verdicts_differ"] == ["C1"] and out["numbers"] == 3 and out["numbers_differ"] == 2
    assert "reproduce_timing.json" not in out["files"]
    assert out["world_card"]["oracle_heldout_accuracy"]["met"] == [True, False]
    text = render([{"labels": ["x", "y"], **out}])
    assert "| C1 | holds | inconclusive (moves) |" in text and "0.730 (met) | 0.710 (not met)" in text
    assert str(tmp_path) not in text


def test_side_by_side_section_shows_each_workload_and_says_when_nothing_was_recorded():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from workloads_side_by_side import side_by_side_section

    out = {"commits": {"base": "aaaa", "new": "bbbb"}, "rounds": 2,
           "workloads": {"oracle": {"base_seconds": 3.0, "new_seconds": 2.0, "speedup": 1.5, "speedup_range": [1.4, 1.6]}}}
    lines = side_by_side_section(out)
    assert lines[0].startswith("## 7.") and "| oracle | 3.00 | 2.00 | 1.50x (1.40-1.60) |" in lines
    assert "Not recorded" in "\n".join(side_by_side_section({}))


def _replay():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import replay_reproduction

    return replay_reproduction


OLD_POLICY = {"output_dir": "/old/cache/policy/p1", "model_path": "/old/cache/world/w/sft_a/medium/model", "loss": "sepo",
              "loss_kwargs": {"gamma": 1.0}, "reference_path": "", "data_path": "/old/cache/oracle/o1", "split": "",
              "selection": "adaptive", "k_w": 0.3, "k_l": 0.3, "p": 0.7, "selection_seed": 0, "seed": 0}


def test_replay_translates_older_policy_configs_into_configs_this_code_accepts():
    from sepo.policy import PolicyConfig

    replay, base = _replay(), {"length_buckets": 2, "eval_batch_size": 128}
    adaptive = replay.to_new("policy", OLD_POLICY, base)
    assert adaptive["selector"] == "adaptive" and adaptive["selection_kwargs"] == {"mass": 0.7}
    assert not {"selection", "k_w", "k_l", "p"} & adaptive.keys() and adaptive["length_buckets"] == 2
    topk = replay.to_new("policy", {**OLD_POLICY, "selection": "sepo", "k_w": 0.1, "k_l": 1.0}, base)
    assert (topk["selector"], topk["selection_kwargs"]) == ("topk", {"k_w": 0.1, "k_l": 1.0})
    sdpo = replay.to_new("policy", {**OLD_POLICY, "loss": "selective_dpo", "loss_kwargs": {"beta": 0.1, "quantile": 0.6},
                                    "reference_path": "/ref", "data_path": "/prefs", "split": "train"}, base)
    assert sdpo["loss_kwargs"] == {"beta": 0.1, "k": pytest.approx(0.4)}
    for config in (adaptive, topk, sdpo):
        PolicyConfig.from_dict(config)  # validated: every field known, every value allowed
    assert replay.to_new("evaluate", {"batch_size": 64, "seed": 1}, base) == {"batch_size": 128, "seed": 1}


def test_replay_points_each_side_at_its_own_replayed_runs_and_reference_samples(tmp_path):
    replay = _replay()
    evaluation = {"model_dir": "/old/cache/policy/p1/checkpoints/checkpoint-24", "reference_dir": "/old/sft",
                  "reference_outputs": "/old/cache/derived/w/reference_outputs/r1.json", "batch_size": 64,
                  "out_dir": "/old/cache/evaluate/e1"}
    jobs = [{"id": "oracle/o1", "kind": "oracle", "config": {"output_dir": "/old/cache/oracle/o1", "data_path": "/d"},
             "run": "/old/cache/oracle/o1"},
            {"id": "policy/p1", "kind": "policy", "config": OLD_POLICY, "run": "/old/cache/policy/p1"},
            {"id": "evaluate/e1", "kind": "evaluate", "config": evaluation, "run": "/old/cache/evaluate/e1"},
            {"id": "reference/r1", "kind": "reference", "config": evaluation,
             "path": "/old/cache/derived/w/reference_outputs/r1.json"}]
    judge = {"max_words": 48}
    old = {j["id"]: j for j in replay.side_jobs(jobs, tmp_path / "old", None, judge)}
    new = {j["id"]: j for j in replay.side_jobs(jobs, tmp_path / "new", {"length_buckets": 2, "eval_batch_size": 128},
                                                judge)}
    assert old["policy/p1"]["config"]["data_path"] == str(tmp_path / "old" / "oracle" / "o1")
    assert old["policy/p1"]["config"]["selection"] == "adaptive"  # the older side runs its own config
    assert new["policy/p1"]["config"]["data_path"] == str(tmp_path / "new" / "oracle" / "o1")
    assert new["evaluate/e1"]["config"]["model_dir"] == str(tmp_path / "new" / "policy" / "p1" / "checkpoints" / "checkpoint-24")
    assert new["evaluate/e1"]["config"]["reference_outputs"] == new["reference/r1"]["path"] == str(
        tmp_path / "new" / "reference" / "r1.json")
    assert new["evaluate/e1"]["config"]["out_dir"] == str(tmp_path / "new" / "evaluate" / "e1")
    assert new["evaluate/e1"]["judge"] == judge and new["evaluate/e1"]["config"]["batch_size"] == 128
    assert new["oracle/o1"]["config"]["reference_cache_dir"] == str(tmp_path / "new" / "reference_logps")
    assert "reference_cache_dir" not in new["policy/p1"]["config"]  # reference-free: no reference to cache
    assert "/old/" not in str([j["config"].get("output_dir", j["config"].get("out_dir")) for j in new.values()])


def test_replay_balances_workers_and_compares_metrics_without_clocks():
    replay = _replay()
    jobs = [{"id": name} for name in "abcde"]
    batches = replay.split_longest_first(jobs, {"a": 10, "b": 6, "c": 5, "d": 4, "e": 1}, 2)
    weights = {"a": 10, "b": 6, "c": 5, "d": 4, "e": 1}
    assert sorted(sum(weights[j["id"]] for j in b) for b in batches) == [12, 14]  # longest first: a | b c, then d | e
    assert sorted(j["id"] for b in batches for j in b) == list("abcde")
    assert replay.split_longest_first(jobs[:1], {}, 2) == [[{"id": "a"}]]
    assert replay.same_metrics({"x": 1.0, "train_runtime": 3.0, "note": "a"}, {"x": 1.0, "train_runtime": 9.0, "note": "b"})
    assert not replay.same_metrics({"x": 1.0}, {"x": 1.0001})
    assert not replay.same_metrics({"x": 1.0}, {"x": 1.0, "y": 2.0})


def test_replay_section_states_the_estimate_and_its_verdict():
    replay = _replay()
    out = {"commits": {"old": "aaaa", "new": "bbbb"}, "date": "2026-12-07T12:00:00", "jobs": 3, "left_out": 0,
           "counts": {"oracle": 1, "policy": 1, "evaluate": 1}, "old_metrics_equal": 2, "old_metrics_compared": 2, "training_runs": 2, "training_steps_equal": 2,
           "old_reproduce_seconds": 1000.0, "target": 2.0,
           "old": {"phases": {"oracle+reference": 100.0, "policy": 500.0, "evaluate": 200.0}, "seconds": 800.0},
           "new": {"phases": {"oracle+reference": 40.0, "policy": 150.0, "evaluate": 60.0}, "seconds": 250.0},
           "estimate": {"old_seconds": 1000.0, "rest_seconds": 200.0, "new_seconds": 450.0, "speedup": 1000 / 450}}
    text = "\n".join(replay.section(out))
    assert text.startswith("## 8.") and "| policy | 500 | 150 | 3.33x |" in text and "| all stage calls | 800 | 250 | 3.20x |" in text
    assert "**2.22x**" in text and "**met**" in text
    assert "older / this" not in text  # no per-call seconds recorded: no table by kind
    out["old"]["jobs"] = {"oracle/a": 30.0, "policy/b": 20.0, "policy/c": 20.0}
    out["new"]["jobs"] = {"oracle/a": 20.0, "policy/b": 25.0, "policy/c": 15.0}
    out["estimate"]["speedup"] = 1.5
    text = "\n".join(replay.section(out))
    assert "**missed**" in text and "| 1 oracle | 30 | 20 | 1.50 |" in text and "| 2 policy | 40 | 40 | 1.00 |" in text
    assert "Not recorded" in "\n".join(replay.section({}))


def test_replay_flop_bound_says_what_the_matmul_rate_allows():
    """3000 GFLOP at 100 GFLOP/s on each of 2 processes: 15 s. With 1000 s before and a rest of 200 s, 2x leaves
    300 s for the stage calls, so they need 0.05 of the rate; a replay of 150 s reached 0.10 of it."""
    replay = _replay()
    estimate = {"old_seconds": 1000.0, "rest_seconds": 200.0}
    bound = replay.flop_bound(estimate, 150.0, {"oracle/a": 1000.0, "policy/b": 1500.0, "policy/c": 500.0}, 100.0)
    assert bound["seconds_at_rate"] == pytest.approx(15.0) and bound["achieved_fraction"] == pytest.approx(0.1)
    assert bound["whole_seconds_at_rate"] == pytest.approx(215.0) and bound["max_speedup"] == pytest.approx(1000 / 215)
    assert bound["stage_budget_seconds"] == pytest.approx(300.0) and bound["needed_fraction"] == pytest.approx(0.05)
    assert bound["gflop_by_kind"] == {"oracle": 1000.0, "policy": 2000.0}
    assert replay.flop_bound({"old_seconds": 300.0, "rest_seconds": 200.0}, 150.0, {"a/x": 10.0}, 1.0)["needed_fraction"] is None
    out = {"commits": {"old": "aaaa", "new": "bbbb"}, "date": "d", "jobs": 3, "left_out": 0, "counts": {"oracle": 1},
           "old_metrics_equal": 1, "old_metrics_compared": 1, "training_runs": 1, "training_steps_equal": 1,
           "old_reproduce_seconds": 1000.0, "target": 2.0, "old": {"phases": {"p": 800.0}, "seconds": 800.0},
           "new": {"phases": {"p": 150.0}, "seconds": 150.0},
           "estimate": {**estimate, "new_seconds": 350.0, "speedup": 1000 / 350}, "flops": bound}
    text = "\n".join(replay.section(out))
    assert "3.0 TFLOP" in text and "oracle 1.0, policy 2.0" in text and "take 15 s" in text and "reached 0.10" in text
    assert "at best take 215 s (4.65x)" in text and "fit in 300 s, i.e. run at 0.05 of that rate" in text


def test_replay_phases_follow_what_each_run_reads():
    replay = _replay()
    jobs = [{"id": "oracle/o", "kind": "oracle", "config": {"data_path": "/c/world/w/preferences_id"}, "run": "/c/oracle/o"},
            {"id": "policy/strong", "kind": "policy", "config": {"data_path": "/c/world/w/preferences_id"}, "run": "/c/policy/strong"},
            {"id": "policy/s", "kind": "policy", "config": {"data_path": "/c/oracle/o"}, "run": "/c/policy/s"},
            {"id": "policy/sdpo", "kind": "policy", "config": {"reference_path": "/c/policy/strong/model"}, "run": "/c/policy/sdpo"},
            {"id": "evaluate/e", "kind": "evaluate", "run": "/c/evaluate/e",
             "config": {"model_dir": "/c/policy/sdpo/model", "reference_outputs": "/c/derived/w/reference_outputs/r.json"}},
            {"id": "reference/r", "kind": "reference", "path": "/c/derived/w/reference_outputs/r.json",
             "config": {"model_dir": "/c/policy/sdpo/model", "reference_dir": "/c/world/w/sft_a/medium/model",
                        "reference_outputs": "/c/derived/w/reference_outputs/r.json"}}]
    assert replay.levels(jobs) == {"oracle/o": 0, "policy/strong": 0, "reference/r": 0, "policy/s": 1, "policy/sdpo": 1,
                                   "evaluate/e": 2}
    assert replay.notebook_made(jobs) == set()
    carried = {"id": "policy/c", "kind": "policy", "config": {"data_path": "/c/oracle/o/carried_to_a"}, "run": "/c/policy/c"}
    judged = {"id": "evaluate/c", "kind": "evaluate", "config": {"model_dir": "/c/policy/c/model"}, "run": "/c/evaluate/c"}
    assert replay.notebook_made(jobs + [judged, carried]) == {"policy/c", "evaluate/c"}  # and what reads it, in any order
    jobs[1]["config"]["reference_path"] = "/c/policy/sdpo/model"  # two runs that need each other cannot be ordered
    with pytest.raises(SystemExit, match="need each other"):
        replay.levels(jobs)
