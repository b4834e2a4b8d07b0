"""The table functions compose pipeline runs into rows that trace back to their runs (a fake pipeline
stands in for training: every run's numbers are a function of its recipe and seed)."""

import types
import zlib
from pathlib import Path

import pandas as pd
import pytest

from sepo import tables
from sepo.errors import ConfigError
from sepo.methods import method
from sepo.pipeline import ROOT, ExperimentConfig


class FakePipeline:
    """Records the runs asked for; a run directory names its recipe, so rows can be checked against it."""

    def __init__(self, seeds=(0, 1, 2), **settings):
        self.config = ExperimentConfig(seeds=tuple(seeds), **settings)
        self.cache = ROOT / "cache-fake"
        self.calls = []
        self.lrs = {}  # run -> learning rate
        self.runs_on_at = set()  # learning rates whose policies stop ending their responses

    def method(self, name):
        return method(name, self.config.method_settings.get(name))

    def sft_path(self, size, tokenizer="a"):
        return str(self.cache / "world" / f"sft-{size}-{tokenizer}")

    def oracle(self, seed, size=None, fraction=None, beta=None, world="id", tokenizer="a", epochs=None, data_path=None):
        path = self.cache / "oracle" / f"oracle-{size or 'small'}-{beta}-{tokenizer}-{seed}"
        self.calls.append(("oracle", path.name))
        return path, {}

    def policy(self, recipe, seed, size=None, data=None, world="id", save_steps=0, reference_path=None, epochs=None, lr=None,
               snapshots=False):
        tag = f"{recipe.name}|{recipe.loss}|{sorted(recipe.loss_kwargs.items())}|{recipe.selector}|" \
              f"{sorted(recipe.selection_kwargs.items())}|{size}|{reference_path}|{seed}" + (f"|lr={lr}" if lr is not None else "") \
              + ("|snapshots" if snapshots and self.config.snapshot_fractions else "")  # as Pipeline.policy
        self.calls.append(("policy", tag, data))
        if recipe.needs_selection and data is None:
            raise ConfigError("needs an oracle run")
        run = self.cache / "policy" / f"{zlib.crc32(tag.encode()):08x}"
        self.lrs[run.name] = lr
        return run, {"train/loss": 0.5}

    def evaluate(self, model_dir, seed, size=None, world="id", reference_dir=None, split="test"):
        self.calls.append(("evaluate", Path(model_dir).name, split))
        value = zlib.crc32(f"{model_dir}{split}".encode()) % 1000 / 1000
        cutoff = 0.9 if self.lrs.get(Path(model_dir).name) in self.runs_on_at else 0.0
        return {"win_rate": value, "reward": value, "kl": 1.0 + value, "cutoff_share": cutoff,
                "eval_run": f"cache-fake/evaluate/{Path(model_dir).name}"}

    def diagnose(self, model_dir, size=None, world="id"):
        return {"chosen_logp": -1.0, "rejected_logp": -2.0, "eos_logp": -0.5,
                "d_chosen_logp": 0.0 if "sft" in str(model_dir) else -0.25, "d_rejected_logp": -0.5, "d_eos_logp": 0.1}

    def mixed_data_path(self, a, b):
        return str(self.cache / "derived" / f"mixed_{a}_{b}")

    def frontier(self, run_dir, label, seed, size=None, world="id"):
        return pd.DataFrame({"method": [label] * 3, "step": [0, 1, 2], "kl": [0.0, 1.0, 2.0], "reward": [0.0, 0.5, 0.7],
                             "seed": [seed] * 3})


def test_main_table_rows_trace_to_their_runs_and_reject_unknown_methods():
    pipe = FakePipeline()
    frame, claims, search, curves = tables.main_table(pipe, ["DPO", "SePO", "SePO-random"])
    assert len(search) == 0 and len(curves) == 0 and (frame[frame.method != "SFT"].lr == pipe.config.policy_lr).all()
    assert len(frame) == 3 * 4 and set(frame.method) == {"SFT", "DPO", "SePO", "SePO-random"}
    assert set(claims) == {"C2", "R5", "C2-control"}
    sepo = frame[frame.method == "SePO"]
    assert all(run.startswith("cache-fake/policy/") and run.endswith(key) for run, key in zip(sepo.run, sepo.run_key))
    assert all(o.startswith("cache-fake/oracle/oracle-small") for o in sepo.oracle_run)
    assert frame[frame.method == "DPO"].oracle_run.isna().all()  # DPO reads no oracle
    assert (frame[frame.method == "SFT"].d_chosen_logp == 0).all() and (frame[frame.method == "SePO"].d_chosen_logp == -0.25).all()
    # methods that select tokens got the seed's oracle; the others the world's pairs
    for kind, tag, data in [c for c in pipe.calls if c[0] == "policy"]:
        assert tag.endswith(f"|lr={pipe.config.policy_lr}")
        assert (data is not None) == ("|sepo|" in tag)
    with pytest.raises(ConfigError, match="unknown method 'Bogus'"):
        tables.main_table(FakePipeline(), ["DPO", "Bogus"])


def test_every_method_gets_the_same_learning_rate_search_on_validation_prompts():
    pipe = FakePipeline(seeds=(0, 1, 2), policy_lr_grid=(3e-5, 1e-4, 3e-4))
    frame, claims, search, curves = tables.main_table(pipe, ["DPO", "SePO"])
    assert len(search) == 2 * 3 and set(search.lr) == {3e-5, 1e-4, 3e-4}
    assert search.groupby("method").chosen.sum().tolist() == [1, 1]
    for method, group in search.groupby("method"):
        best = group.sort_values("win_rate", ascending=False).lr.iloc[0]
        assert (frame[frame.method == method].lr == best).all()  # every seed trains at the chosen rate
    evaluated = [(run, split) for kind, run, split in (c for c in pipe.calls if c[0] == "evaluate")]
    # the search is judged on validation prompts only, the table on test prompts only
    assert sum(split == "validation" for _, split in evaluated) == len(search)
    assert all((key, "validation") in evaluated for key in search.run_key)
    assert all((key, "test") in evaluated for key in frame[frame.method != "SFT"].run_key)
    assert (search.method.value_counts() == 3).all()
    # the other tables train each method at the rate the same search chose (its runs come from the cache)
    chosen = dict(zip(search[search.chosen].method, search[search.chosen].lr))
    assert tables.chosen_learning_rate(pipe, pipe.method("SePO")) == chosen["SePO"]
    w2s, _ = tables.weak_to_strong(pipe, ["small"], ["large"])
    assert (w2s[w2s.method == "SePO"].lr == chosen["SePO"]).all() and (w2s[w2s.method == "DPO"].lr == chosen["DPO"]).all()


def test_the_search_then_tries_each_methods_beta_or_gamma_at_its_chosen_rate():
    grid = {"dpo": {"beta": [0.03, 0.1, 0.3]}, "sepo": {"gamma": [1.0, 2.5]}}
    pipe = FakePipeline(seeds=(0, 1), policy_lr_grid=(1e-4, 1e-3), policy_knob_grid=grid)
    frame, claims, search, curves = tables.main_table(pipe, ["DPO", "SePO", "RRHF"])
    # stage 1: every rate at the method's own value; stage 2: its other values at the chosen rate (RRHF has none)
    assert search.groupby("method").stage.apply(lambda x: sorted(x.tolist())).to_dict() == {
        "DPO": [1, 1, 2, 2], "SePO": [1, 1, 2], "RRHF": [1, 1]}
    assert (search.groupby("method").chosen.sum() == 1).all()
    for method, group in search.groupby("method"):
        first = group[group.stage == 1]
        rate = first.sort_values(["win_rate", "lr"], ascending=[False, True]).lr.iloc[0]
        assert (group[group.stage == 2].lr == rate).all()
        at_rate = group[group.lr == rate]
        best = at_rate.sort_values("win_rate", ascending=False).iloc[0]
        assert group[group.chosen].setting.iloc[0] == best.setting
        rows = frame[frame.method == method]
        assert (rows.lr == rate).all() and (rows.setting == best.setting).all()  # every seed at the chosen setting
    assert set(search[search.method == "DPO"].setting) == {"beta=0.03", "beta=0.1", "beta=0.3"}
    assert set(search[search.method == "RRHF"].setting) == {""}
    # the other notebooks take the chosen setting too: rate and value
    rate, recipe = tables.chosen_setting(pipe, pipe.method("DPO"))
    chosen = search[(search.method == "DPO") & search.chosen].iloc[0]
    assert rate == chosen.lr and tables.setting_label(pipe, recipe) == chosen.setting
    w2s, _ = tables.weak_to_strong(pipe, ["small"], ["large"])
    assert (w2s[w2s.method == "DPO"].setting == chosen.setting).all()


def test_the_search_passes_over_rates_whose_policies_stop_ending_their_responses():
    pipe = FakePipeline(seeds=(0,), policy_lr_grid=(3e-5, 1e-4, 3e-4), max_cutoff_share=0.05)
    free, chosen_free = tables.learning_rate_search(pipe, [pipe.method("DPO")], None, 0)
    best = free.sort_values("win_rate", ascending=False).lr.iloc[0]
    pipe.runs_on_at = {best}
    search, chosen = tables.learning_rate_search(pipe, [pipe.method("DPO")], None, 0)
    assert chosen_free["DPO"] == best and chosen["DPO"] != best
    assert not search[search.lr == best].eligible.iloc[0] and search[search.chosen].eligible.all()
    pipe.runs_on_at = {3e-5, 1e-4, 3e-4}  # nothing eligible: the smallest rate
    assert tables.learning_rate_search(pipe, [pipe.method("DPO")], None, 0)[1]["DPO"] == 3e-5
    off = FakePipeline(seeds=(0,), policy_lr_grid=(3e-5, 1e-4, 3e-4))  # the default: no threshold
    off.runs_on_at = {best}
    assert tables.learning_rate_search(off, [off.method("DPO")], None, 0)[1]["DPO"] == best


def test_main_table_runs_are_the_frontier_of_the_frontier_methods():
    pipe = FakePipeline(seeds=(0, 1), policy_lr_grid=(1e-4, 1e-3), snapshot_fractions=(0.25, 0.5))
    frame, claims, search, curves = tables.main_table(pipe, ["DPO", "SimPO", "SePO"], frontier_methods=("DPO", "SePO"))
    assert set(curves.method) == {"DPO", "SePO"} and len(curves) == 2 * 2 * 3 and "R2" in claims
    assert set(curves.run) <= set(frame.run)  # the table's own runs, no second set of trainings
    tags = [c[1] for c in pipe.calls if c[0] == "policy"]
    assert all(t.endswith("|snapshots") for t in tags)  # every table run keeps the same snapshots (runs are shared)
    with pytest.raises(ConfigError, match="frontier_methods"):
        tables.main_table(pipe, ["DPO"], frontier_methods=("SePO",))


def test_ablations_change_one_setting_per_variant():
    pipe = FakePipeline(seeds=(0, 1))
    frame, claims = tables.ablations(pipe, ks=[0.1, 0.3, 1.0], k_ls=[1.0], gammas=[2.5], oracle_betas=[0.5], masses=[0.5])
    assert len(frame) == 2 * 7 and set(claims) == {"C3", "R4"}
    tags = [c[1] for c in pipe.calls if c[0] == "policy"]
    assert "SePO k_l=1.0|sepo|[]|topk|[('k_l', 1.0)]|None|None|0|lr=0.0003" in tags
    assert "SePO gamma=2.5|sepo|[('gamma', 2.5)]|topk|[]|None|None|0|lr=0.0003" in tags
    assert "SePO adaptive mass=0.5|sepo|[]|adaptive|[('mass', 0.5)]|None|None|1|lr=0.0003" in tags
    assert ("oracle", "oracle-small-0.5-a-0") in pipe.calls  # the oracle-beta variant trains its own oracle


def test_weak_to_strong_grid_and_baselines():
    pipe = FakePipeline(seeds=(0,))
    frame, claims = tables.weak_to_strong(pipe, ["small", "large"], ["small", "large"])
    assert len(frame[frame.method == "SePO"]) == 4 and len(frame[frame.method == "DPO"]) == 2
    assert set(claims) == {"C4"} and claims["C4"]["effects"][0]["n"] == 1


def test_ood_rows_and_frontiers_carry_runs():
    pipe = FakePipeline(seeds=(0, 1))
    frame, curves, claims = tables.ood_and_overoptimization(pipe, ["DPO", "SePO"], frontier_epochs=2.0, save_steps=4)
    assert set(claims) == {"C5"} and len(curves) == 2 * 2 * 3
    assert curves.run.str.startswith("cache-fake/policy/").all() and frame.run_key.str.len().eq(8).all()


def test_selective_dpo_uses_the_experiments_settings_and_each_reference():
    pipe = FakePipeline(seeds=(0,), method_settings={"Selective-DPO": {"loss_kwargs": {"beta": 0.1}}})
    frame, claims = tables.selective_dpo_references(pipe, "large", ks=[0.4])
    tags = [c[1] for c in pipe.calls if c[0] == "policy" and c[1].startswith("Selective")]
    assert len(tags) == 2 and all("('beta', 0.1), ('k', 0.4)" in t for t in tags)
    assert {t.split("|")[6].split("/")[-1] for t in tags} == {"sft-medium-a", "model"}
    assert set(claims) == {"SDPO"} and frame.reference_run.notna().sum() == 2


def test_summary_means_and_t_intervals():
    frame = pd.DataFrame({"method": ["A"] * 3 + ["B"], "win_rate": [0.4, 0.5, 0.6, 0.7], "reward": [1.0] * 4, "kl": [0.0] * 4})
    table = tables.summary(frame).set_index("method")
    assert table.loc["A", "win_rate"] == pytest.approx(0.5) and table.loc["A", "n_seeds"] == 3
    assert table.loc["A", "win_rate_ci95"] == pytest.approx(4.302653 * 0.1 / 3 ** 0.5, rel=1e-5)
    assert pd.isna(table.loc["B", "win_rate_ci95"])
