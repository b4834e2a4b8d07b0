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
