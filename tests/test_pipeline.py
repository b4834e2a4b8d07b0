"""The pipeline layer: cached stage runs keyed by config and code, a notebook's parameters, methods."""

import dataclasses
import json

import pytest

from sepo.cache import cached_run
from sepo.config import StageConfig, help_field
from sepo.errors import ConfigError
from sepo.methods import method, registered_methods
from sepo.notebook import config_from
from sepo.pipeline import ExperimentConfig, Pipeline


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

    a = cached_run("stage", ToyConfig, {"x": 1}, run, tmp_path, code="v1")
    b = cached_run("stage", ToyConfig, {"x": 1}, run, tmp_path, code="v1")
    c = cached_run("stage", ToyConfig, {"x": 2}, run, tmp_path, code="v1")
    assert len(calls) == 2 and a == b and a[0] != c[0] and c[1] == {"x": 2}
    assert calls == [str(a[0]), str(c[0])] and a[0].parent == tmp_path / "stage"
    d = cached_run("stage", ToyConfig, {"x": 1}, run, tmp_path, code="v2")  # same config, other code: run again
    assert len(calls) == 3 and d[0] != a[0]
    with pytest.raises(ConfigError, match="unknown parameter"):  # unknown/bad values fail before any run
        cached_run("stage", ToyConfig, {"x": 1, "y": 2}, run, tmp_path, code="v1")
    usage = [json.loads(line) for line in (tmp_path / "usage.jsonl").read_text().splitlines()]
    assert [u["built"] for u in usage] == [True, False, True, True]


def test_config_from_reads_the_experiment_file_and_overrides():
    cfg = config_from({"experiment": "configs/mini/smoke.yaml", "seeds": [0, 1], "k": 0.3, "eval_prompts": 8})
    assert cfg.seeds == (0, 1) and cfg.eval_prompts == 8 and cfg.world == "smoke"
    assert cfg.notebook == {"experiment": "configs/mini/smoke.yaml"}
    base = config_from({"experiment": "configs/mini/base.yaml"})
    assert base.world == "default" and base.seeds == (0, 1, 2) and base.method_settings["Selective-DPO"]
    cfg = config_from({"k": 0.3, "ks": [0.1, 0.5]}, notebook={"k": float, "ks": list[float]})
    assert cfg.notebook == {"experiment": "configs/mini/smoke.yaml", "k": 0.3, "ks": [0.1, 0.5]} and "ks:" in cfg.to_yaml()
    with pytest.raises(ConfigError, match=r"\['gamma'\] are not defined"):
        config_from({}, notebook={"gamma": float})
    with pytest.raises(ConfigError, match="eval_prompts"):
        ExperimentConfig(eval_prompts=0)
    with pytest.raises(ConfigError, match="no such file"):
        config_from({"experiment": "configs/mini/nope.yaml"})


@pytest.mark.parametrize("namespace, notebook, message", [
    ({"seeds": "abc"}, {}, r"seeds = 'abc' \(str\): needs a list of an integer; papermill's -p passes text.*-y"),
    ({"methods": '["DPO","Bogus"]'}, {"methods": list[str]}, r"methods = .*\(str\): needs a list of a string.*-f FILE.yaml"),
    ({"eval_prompts": 2.5}, {}, r"eval_prompts = 2.5 \(float\): needs an integer$"),
    ({"k": "0.3"}, {"k": float}, r"k = '0.3' \(str\): needs a number$"),
    ({"train_policies": 1}, {"train_policies": bool}, r"train_policies = 1 \(int\): needs true or false"),
])
def test_a_parameter_of_the_wrong_type_is_refused_naming_it(namespace, notebook, message):
    namespace = {**namespace, **{name: namespace.get(name) for name in notebook}}
    with pytest.raises(ConfigError, match=message):
        config_from(namespace, notebook=notebook)


def test_methods_come_from_the_registries():
    methods = registered_methods()
    assert {"DPO", "IPO", "SimPO", "RRHF", "ConfPO", "Selective-DPO", "SePO", "SePO-random", "SePO-adaptive",
            "SePO-threshold", "SePO-noEOS", "SePO-gold"} == set(methods)
    assert methods["SePO-random"].selector == "random" and methods["SePO"].needs_selection
    assert methods["DPO"].needs_reference and not methods["SimPO"].needs_reference
    # an experiment's settings change only what they name; defaults stay the registry's
    tuned = method("Selective-DPO", {"loss_kwargs": {"beta": 0.1}})
    assert tuned.loss_kwargs == {"beta": 0.1} and tuned.hyperparameters()["k"] == 0.4
    assert method("SePO", {"selection_kwargs": {"k_w": 0.5}}).hyperparameters()["k_l"] == 0.3
    with pytest.raises(ConfigError, match="unknown method 'KTO'"):
        method("KTO")
    with pytest.raises(ConfigError, match="selector 'topk' takes"):
        method("SePO", {"selection_kwargs": {"p": 0.5}})
    with pytest.raises(ConfigError, match="selects no tokens offline"):
        method("DPO", {"selection_kwargs": {"k_w": 0.5}})
    with pytest.raises(ConfigError, match="k_w = 1.5: must be a fraction"):
        method("SePO", {"selection_kwargs": {"k_w": 1.5}})


def test_a_newly_registered_loss_and_selector_are_methods_routed_by_their_needs(monkeypatch):
    import torch

    from sepo import losses, selectors

    monkeypatch.setattr(losses, "LOSSES", dict(losses.LOSSES))
    monkeypatch.setattr(selectors, "SELECTORS", dict(selectors.SELECTORS))
    import sepo.methods as methods_module

    monkeypatch.setattr(methods_module, "LOSSES", losses.LOSSES)
    monkeypatch.setattr(methods_module, "SELECTORS", selectors.SELECTORS)

    @losses.register("anchored", needs_reference=True, needs_selection=True, label="Anchored")
    def anchored(inp, beta: float = 0.1):
        return losses.dpo_loss(inp, beta=beta)

    @selectors.register_selector("first")
    def first(pairs, count: int = 1):
        return pairs.chosen_valid, pairs.rejected_valid

    found = registered_methods()
    assert {"Anchored", "Anchored-first", "Anchored-random", "SePO-first"} <= set(found)
    recipe = found["Anchored-first"]
    assert recipe.needs_reference and recipe.needs_selection and recipe.selector == "first"


@pytest.mark.parametrize("global_step, expected", [(96, [0, 24, 48, 72, 96]), (100, [0, 24, 48, 72, 96, -1])])
def test_frontier_points_are_the_sft_model_every_checkpoint_and_the_final_model_once(tmp_path, monkeypatch, global_step,
                                                                                       expected):
    import types

    import pandas as pd

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
    starts = []
    pipe = types.SimpleNamespace(config=ExperimentConfig(), sft_path=lambda size: "sft", eval_prompts=lambda world: ["p"],
                                 frontier_start=lambda sft, seed, world: starts.append(sft) or {"step": 0},
                                 world=types.SimpleNamespace(eval_prompts=lambda world: ["p"], judge=object()))  # a gold judge
    frame = Pipeline.frontier(pipe, run, "DPO", seed=0)
    # the SFT model's point is drawn once for every run that starts from it; a checkpoint at the last step already
    # holds the final weights: they are evaluated once
    assert starts == ["sft"] and frame.step.tolist() == expected and (frame.method == "DPO").all()
    assert [p[1] for p in seen["points"]] == expected[1:]
    assert seen["points"][-1][2].endswith("model" if expected[-1] == -1 else "checkpoint-96")


def test_markdown_tables_show_small_numbers_in_scientific_notation():
    import pandas as pd

    from sepo.notebook import markdown

    text = markdown(pd.DataFrame({"method": ["A"], "lr": [3e-5], "win_rate": [0.75]}))
    assert "3.0e-05" in text and "0.750" in text and "0.000" not in text
