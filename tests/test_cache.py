"""Cache keys know the code: an edit retrains exactly the runs whose code it touches."""

import os
import shutil
from pathlib import Path

import pytest

import sepo
from sepo.cache import code_fingerprint, module_closure, usage_since

PACKAGE = Path(sepo.__file__).parent


@pytest.fixture()
def package(tmp_path):
    """A copy of the sepo package to edit."""
    root = tmp_path / "sepo"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def keys(root):
    """The code fingerprint of every kind of run, for the package at ``root``."""
    return {
        "world": code_fingerprint("world", root=root),
        "oracle": code_fingerprint("oracle", losses=["dpo"], root=root),
        "policy SePO": code_fingerprint("policy", losses=["sepo"], selectors=["topk"], root=root),
        "policy SePO-random": code_fingerprint("policy", losses=["sepo"], selectors=["random"], root=root),
        "policy DPO": code_fingerprint("policy", losses=["dpo"], root=root),
        "policy SimPO": code_fingerprint("policy", losses=["simpo"], root=root),
        "evaluate": code_fingerprint("evaluate", root=root),
    }


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def changed(before, after):
    return {name for name in before if before[name] != after[name]}


def test_editing_a_loss_retrains_exactly_the_policies_that_use_it(package):
    before = keys(package)
    edit(package / "losses.py", "u_w = gamma * masked_mean(inp.policy_chosen, cw)",
         "u_w = gamma * masked_mean(inp.policy_chosen, cw) * 1.0")
    assert changed(before, keys(package)) == {"policy SePO", "policy SePO-random"}


def test_editing_a_shared_helper_retrains_every_run_that_imports_it(package):
    before = keys(package)
    edit(package / "losses.py", "return masked_sum(values, mask) / mask.sum(-1).clamp(min=1)",
         "return masked_sum(values, mask) / mask.sum(-1).clamp(min=1.0)")
    # the trainer imports the losses module, and every stage the trainer: all depend on its shared part
    assert changed(before, keys(package)) == set(before)


def test_editing_a_selector_retrains_only_the_policies_selected_by_it(package):
    before = keys(package)
    edit(package / "selectors.py", "[seed * 1_000_003 + 2 * r for r in rows]),", "[seed * 1_000_003 + 2 * r + 0 for r in rows]),")
    assert changed(before, keys(package)) == {"policy SePO-random"}


def test_editing_code_no_stage_runs_retrains_nothing(package):
    before = keys(package)
    for name in ("plots.py", "tables.py", "claims.py", "notebook.py", "cache.py"):
        (package / name).write_text((package / name).read_text() + "\n# an edit\n")
    assert changed(before, keys(package)) == set()


def test_editing_the_gold_judge_rebuilds_the_world_and_reevaluates(package):
    before = keys(package)
    (package / "world" / "judge.py").write_text((package / "world" / "judge.py").read_text() + "\n# an edit\n")
    # the world (its pairs are judged), the evaluations, and the policies (the gold selector reads the
    # judge's credit); the oracle's key is unchanged, but it trains on the rebuilt world's files
    assert changed(before, keys(package)) == {"world", "evaluate", "policy SePO", "policy SePO-random", "policy DPO",
                                               "policy SimPO"}


def test_closure_follows_imports_inside_functions():
    closure = module_closure(["sepo.evaluate"])
    assert "sepo.generation" in closure  # imported inside a function
    assert "sepo.plots" not in closure and "sepo.cache" not in closure


def test_usage_tells_runs_built_now_from_runs_read_from_before(tmp_path):
    from sepo.cache import log_usage, usage_lines

    log_usage(tmp_path, "oracle", "old", built=True)
    start = usage_lines(tmp_path)
    log_usage(tmp_path, "oracle", "new", built=True)
    log_usage(tmp_path, "oracle", "new", built=False)
    assert usage_since(tmp_path, start) == {"built": 1, "reused_own": 1, "reused_older": 0}
    log_usage(tmp_path, "oracle", "old", built=False)
    assert usage_since(tmp_path, start)["reused_older"] == 1


def test_another_cpu_kernel_set_is_another_run(monkeypatch):
    import sepo.cache as cache

    here = cache.code_fingerprint("policy", losses=["dpo"])
    monkeypatch.setattr(cache, "numerics", lambda: "torch 2.13.0; cpu kernels AVX2")
    assert cache.code_fingerprint("policy", losses=["dpo"]) != here


def test_numerics_name_the_matrix_products_code_path_and_the_kernel_set_last():
    import subprocess
    import sys

    code = "from sepo.cache import numerics; print(numerics())"
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY")}
    free = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()
    pinned = subprocess.run([sys.executable, "-c", code], env={**env, "MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"},
                            capture_output=True, text=True, check=True).stdout.strip()
    assert "mkl branch off;" in free and "mkl branch COMPATIBLE;" in pinned  # every CPU has MKL's COMPATIBLE path
    assert pinned.endswith("cpu kernels DEFAULT") and free != pinned


def test_the_reproduction_pins_the_kernels_unless_the_environment_names_others(monkeypatch, tmp_path):
    from sepo import claims, reproduce

    seen = []
    monkeypatch.setattr(reproduce, "run_notebooks", lambda *a, **k: seen.append(
        {name: os.environ.get(name) for name in (*reproduce.PINNED_KERNELS, "SEPO_QUIET")}) or {})
    monkeypatch.setattr(claims, "write_claims", lambda results: Path(results) / "claims.md")
    names = (*reproduce.PINNED_KERNELS, "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "SEPO_QUIET")  # what main sets
    saved = {name: os.environ.pop(name, None) for name in names}
    try:  # main sets them in this process's environment: put them back as they were for the tests after this one
        reproduce.main(["--only", "01_walkthrough", "--results", str(tmp_path)])
        for name in names:
            os.environ.pop(name, None)
        os.environ["ATEN_CPU_CAPABILITY"] = "default"  # make stability: another kernel set, asked for
        reproduce.main(["--only", "01_walkthrough", "--results", str(tmp_path)])
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
    assert seen == [{"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "SEPO_QUIET": "1"},  # kernels without progress bars
                    {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX2", "SEPO_QUIET": "1"}]
