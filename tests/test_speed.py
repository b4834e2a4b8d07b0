"""Helpers that make the reproduction faster without changing what it computes."""

from __future__ import annotations

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
