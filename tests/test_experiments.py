"""The experiments layer: cached stage runs, config from a notebook's namespace, methods."""

import dataclasses
import json

import pytest

from sepo.config import StageConfig, help_field
from sepo.errors import ConfigError
from sepo.experiments import METHODS, ExperimentConfig, cached_run, config_from, method


@dataclasses.dataclass
class ToyConfig(StageConfig):
    x: int = help_field(1, help="a value")
    output_dir: str = help_field("", help="run directory")

    def validate(self) -> None:  # like the training stages: no run without a run directory
        self._require(bool(self.output_dir), "output_dir", "a run directory is required")


def test_cached_run_runs_once_per_config(tmp_path):
    calls = []

    def run(config):
        calls.append(config.output_dir)
        metrics = {"x": config.x}
        (tmp_path / "stage").mkdir(exist_ok=True)
        from pathlib import Path

        Path(config.output_dir).mkdir(parents=True)
        (Path(config.output_dir) / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    a = cached_run("stage", ToyConfig, {"x": 1}, run, tmp_path)
    b = cached_run("stage", ToyConfig, {"x": 1}, run, tmp_path)
    c = cached_run("stage", ToyConfig, {"x": 2}, run, tmp_path)
    assert len(calls) == 2 and a == b and a[0] != c[0] and c[1] == {"x": 2}
    assert calls == [str(a[0]), str(c[0])] and a[0].parent == tmp_path / "stage"
    with pytest.raises(ConfigError, match="unknown parameter"):  # unknown/bad values fail before any run
        cached_run("stage", ToyConfig, {"x": 1, "y": 2}, run, tmp_path)


def test_config_from_namespace_and_validation():
    cfg = config_from({"world": "smoke", "seeds": [0, 1], "k": 0.3, "eval_prompts": 8})
    assert cfg.seeds == (0, 1) and cfg.eval_prompts == 8 and cfg.notebook == {}
    cfg = config_from({"world": "smoke", "k": 0.3, "ks": [0.1, 0.5]}, notebook=("k", "ks"))
    assert cfg.notebook == {"k": 0.3, "ks": [0.1, 0.5]} and "ks:" in cfg.to_yaml()
    with pytest.raises(ConfigError, match=r"\['gamma'\] are not defined"):
        config_from({"world": "smoke"}, notebook=("gamma",))
    with pytest.raises(ConfigError, match="eval_prompts"):
        ExperimentConfig(eval_prompts=0)


def test_methods():
    assert {"DPO", "IPO", "SimPO", "RRHF", "ConfPO", "Selective-DPO", "SePO", "SePO-random"} == set(METHODS)
    assert method("SePO", k_w=0.5).k_w == 0.5 and METHODS["SePO"].k_w == 0.3
    with pytest.raises(ConfigError, match="unknown method 'KTO'"):
        method("KTO")


def test_selected_tokens_counts_what_the_selection_keeps(tokenizer):
    from datasets import Dataset

    from sepo.experiments import selected_tokens

    # two pairs; with k = 0.5 the chosen keeps its 2 highest tokens of 4, the rejected its lowest 1 of 2
    a, b, c, eos = 10, 11, 12, tokenizer.eos_token_id
    scored = Dataset.from_dict({
        "chosen_ids": [[a, b, c, eos], [a, a, c, eos]], "rejected_ids": [[b, eos], [c, eos]],
        "chosen_scores": [[0.9, 0.1, 0.8, -1.0], [0.7, 0.6, 0.0, -1.0]], "rejected_scores": [[0.0, -2.0], [0.0, -3.0]],
        "chosen_offsets": [[[0, 1], [1, 2], [2, 3], [3, 3]]] * 2, "rejected_offsets": [[[0, 1], [1, 1]]] * 2,
        "chosen_credit": [[[0, 1, 0.5]], [[0, 1, 0.25]]], "rejected_credit": [[], []],
    })
    frame = selected_tokens(scored, tokenizer, k=0.5)
    chosen = frame[frame.side == "chosen"].set_index("token")
    assert chosen.loc[repr(tokenizer.decode([a])), "selected"] == 3  # a twice in pair 2, once in pair 1
    assert chosen.loc[repr(tokenizer.decode([a])), "share_of_selection"] == 0.75
    assert chosen.loc[repr(tokenizer.decode([a])), "share_of_tokens"] == 3 / 8
    assert chosen.loc[repr(tokenizer.decode([a])), "mean_gold_credit"] == (0.5 + 0.25) / 3  # credit on token 0 only
    rejected = frame[frame.side == "rejected"]
    assert rejected.token.tolist() == [repr(tokenizer.decode([eos]))] and rejected.selected.tolist() == [2]


@pytest.mark.parametrize("global_step, expected", [(96, [0, 24, 48, 72, 96]), (100, [0, 24, 48, 72, 96, -1])])
def test_frontier_points_are_the_sft_model_every_checkpoint_and_the_final_model_once(tmp_path, monkeypatch, global_step,
                                                                                       expected):
    import types

    import pandas as pd

    from sepo import experiments

    run = tmp_path / "run"
    for step in (24, 48, 72, 96):
        (run / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"train/global_step": global_step}))
    seen = {}

    def fake_frontier(points, *args, **kwargs):
        seen["points"] = list(points)
        return pd.DataFrame({"method": [p[0] for p in seen["points"]], "step": [p[1] for p in seen["points"]]})

    monkeypatch.setattr("sepo.evaluate.reward_kl_frontier", fake_frontier)
    monkeypatch.setattr("sepo.trainer.load_causal_lm", lambda path, field: types.SimpleNamespace(eval=lambda: None))
    monkeypatch.setattr("sepo.trainer.load_tokenizer", lambda path, field: None)
    pipe = types.SimpleNamespace(config=ExperimentConfig(), sft_path=lambda size: "sft",
                                 world=types.SimpleNamespace(eval_prompts=lambda world: ["p"], judge=None))
    experiments.frontier(pipe, run, "DPO", seed=0)
    # a checkpoint at the last step already holds the final weights: they are evaluated once
    assert [p[1] for p in seen["points"]] == expected
    assert seen["points"][0][2] == "sft" and seen["points"][-1][2].endswith("model" if expected[-1] == -1 else "checkpoint-96")
