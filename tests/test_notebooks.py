"""A notebook executed by papermill with a YAML override, as the README documents, and its recorded metrics.

nbval runs every notebook with its stored smoke parameters (``make test``); this test checks the other
route: ``papermill notebook out.ipynb -f params.yaml`` replaces the parameters cell, and the values of
the YAML reach the run's ``config.yaml`` and ``metrics.json``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_papermill_walkthrough_with_yaml_override(tmp_path):
    results = tmp_path / "results"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"results_dir": str(results), "k": 0.5, "gamma": 2.0, "pair_index": 3,
                                      "cache_dir": str(ROOT / "cache")}))
    out = tmp_path / "out.ipynb"
    env = {**os.environ, "CI": "true"}
    subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "01_walkthrough.ipynb"), str(out),
                    "-f", str(params), "--cwd", str(ROOT), "--no-progress-bar", "-k", "python3"],
                   check=True, env=env, capture_output=True, text=True)

    metrics = json.loads((results / "metrics.json").read_text())
    config = yaml.safe_load((results / "config.yaml").read_text())
    assert metrics["k"] == 0.5 and metrics["gamma"] == 2.0 and metrics["pair_index"] == 3
    assert config["notebook"] == {"experiment": "configs/mini/smoke.yaml", "pair_index": 3, "k": 0.5, "gamma": 2.0}
    assert config["world"] == "smoke"
    assert abs(metrics["loss_by_hand"] - metrics["loss_registry"]) < 1e-5
    # the recorded config is portable: a path inside the project is written relative to it
    assert config["cache_dir"] == "cache"
    assert {"tokens_chosen.png", "tokens_rejected.png"} <= {p.name for p in results.iterdir()}
    executed = json.loads(out.read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "k = 0.5" in "".join(injected[0]["source"])


def test_a_parameter_of_the_wrong_type_is_refused_before_any_work(tmp_path):
    """papermill's -p passes a list as text: the notebook stops at its config cell, naming the parameter,
    the type it needs and how to pass a list."""
    out = tmp_path / "out.ipynb"
    env = {**os.environ, "CI": "true"}
    run = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "04_main_table.ipynb"), str(out),
                          "-p", "methods", '["DPO","Bogus"]', "-p", "results_dir", str(tmp_path / "results"),
                          "--cwd", str(ROOT), "--no-progress-bar", "-k", "python3"],
                         env=env, capture_output=True, text=True)
    assert run.returncode != 0
    assert "notebook parameter methods = '[\"DPO\",\"Bogus\"]' (str): needs a list of a string" in run.stderr + run.stdout
    assert "-y" in run.stderr + run.stdout and not (tmp_path / "results").exists()
