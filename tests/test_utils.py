"""Shared helpers: strict JSON on disk."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sepo.utils import dumps_json, write_json, write_run_record


def _strict_load(path: Path):
    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_write_json_turns_nan_and_inf_into_null(tmp_path):
    value = {"a": float("nan"), "b": [1.5, float("inf"), -math.inf], "c": {"d": np.float32("nan"), "e": np.float64(2.0)},
             "f": torch.tensor([0.5, float("nan")]), "g": np.array([np.inf, 3]), "h": np.int64(4), "i": Path("x/y"), "j": None}
    write_json(tmp_path / "m.json", value)
    assert _strict_load(tmp_path / "m.json") == {"a": None, "b": [1.5, None, None], "c": {"d": None, "e": 2.0},
                                                  "f": [0.5, None], "g": [None, 3.0], "h": 4, "i": "x/y", "j": None}
    assert "NaN" not in (tmp_path / "m.json").read_text() and "Infinity" not in (tmp_path / "m.json").read_text()


def test_run_record_metrics_are_strict_json(tmp_path):
    write_run_record(tmp_path, "seed: 0\n", {"eval/loss": float("nan"), "train/loss": 0.25})
    assert _strict_load(tmp_path / "metrics.json") == {"eval/loss": None, "train/loss": 0.25}


def test_a_value_json_cannot_hold_leaves_no_file(tmp_path):
    with pytest.raises(TypeError):
        write_json(tmp_path / "m.json", {"a": object()})
    assert list(tmp_path.iterdir()) == []
    assert dumps_json({"b": 1, "a": float("nan")}) == '{\n  "a": null,\n  "b": 1\n}\n'


def test_column_reads_a_dataset_column_as_a_list_in_row_order():
    from datasets import Dataset

    from sepo.utils import column

    data = Dataset.from_dict({"ids": [[1, 2], [3], [4, 5, 6]], "row": [0, 1, 2]}).select([2, 0])
    assert column(data, "ids") == [[4, 5, 6], [1, 2]] and column(data, "row") == [2, 0]
    assert isinstance(column(data, "ids"), list)


def test_the_import_heap_is_frozen_once_after_a_collection(monkeypatch):
    """The first call collects garbage and freezes what is alive; later calls do nothing, so objects made by
    stage runs stay collectable."""
    import gc

    import sepo.utils as utils

    calls = []
    monkeypatch.setattr(utils, "_HEAP_FROZEN", False)
    monkeypatch.setattr(utils.gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(utils.gc, "freeze", lambda: calls.append("freeze"))
    utils.freeze_import_heap()
    utils.freeze_import_heap()
    assert calls == ["collect", "freeze"]
    assert gc.isenabled()
