"""Experiments of the mini world: cached stage runs composed into the tables of the notebooks.

A :class:`Pipeline` builds (or loads) the world and runs the stages — oracle, policy, evaluation —
each through its own ``run_<stage>`` function, under ``cache/<stage>/<fingerprint>/`` where the
fingerprint is that of the stage's full config. Inputs are themselves cached directories (the
world's directory is keyed by its config), so a changed config anywhere upstream changes every key
downstream, and an unchanged one is never re-run. Notebooks call these functions and plot.

Seeds: one world per configuration; a seed changes the oracle's subset and training order, the
policy's training order and the evaluation samples.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sepo.config import StageConfig, help_field
from sepo.errors import ConfigError
from sepo.utils import write_json

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# Methods compared in the tables
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Method:
    """A policy-training recipe: a registry loss, its hyper-parameters and, for SePO, the selection."""

    name: str
    loss: str
    loss_kwargs: dict = dataclasses.field(default_factory=dict)
    selection: str = "sepo"
    k_w: float = 0.3
    k_l: float = 0.3
    p: float = 0.5
    reference: str = "sft"  # for losses with a reference: "sft" (the policy's start) or "strong"

    def replace(self, **changes: Any) -> "Method":
        return dataclasses.replace(self, **changes)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("DPO", "dpo", {"beta": 0.1}),
        Method("IPO", "ipo", {"beta": 0.1}),
        Method("SimPO", "simpo", {"beta": 2.0, "margin": 1.0}),
        Method("RRHF", "rrhf", {"sft_weight": 1.0}),
        Method("ConfPO", "confpo", {"beta": 2.0, "margin": 1.0}),
        Method("Selective-DPO", "selective_dpo", {"beta": 0.1, "quantile": 0.6}),
        Method("SePO", "sepo", {"gamma": 1.0}),
        Method("SePO-random", "sepo", {"gamma": 1.0}, selection="random"),
    )
}


def method(name: str, **changes: Any) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name].replace(**changes) if changes else METHODS[name]


# --------------------------------------------------------------------------------------------
# Config shared by the experiment notebooks
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ExperimentConfig(StageConfig):
    """Parameters shared by the experiment notebooks (each notebook adds its own sweep)."""

    world: str = help_field("smoke", help="'smoke' (seconds), 'default' (configs/mini/world.yaml) or a WorldConfig YAML path")
    cache_dir: str = help_field("cache", help="where worlds, models, scores and evaluations are cached by config")
    results_dir: str = help_field("results/scratch", help="where the notebook writes metrics, tables and figures")
    seeds: tuple = help_field((0,), help="seeds of oracle subsets, training order and evaluation samples")
    oracle_size: str = help_field("small", help="model size of the oracle (and of its reference)")
    oracle_fraction: float = help_field(1.0, help="fraction of the oracle split that trains the oracle")
    oracle_beta: float = help_field(0.1, help="DPO beta of the oracle; scale of the token rewards")
    oracle_epochs: float = help_field(3.0, help="epochs of oracle DPO training")
    oracle_lr: float = help_field(1e-3, help="learning rate of the oracle")
    policy_size: str = help_field("medium", help="model size of the policy")
    policy_epochs: float = help_field(1.0, help="epochs of policy training")
    policy_lr: float = help_field(3e-4, help="learning rate of the policy")
    batch_size: int = help_field(16, help="pairs per optimizer step (oracle and policy)")
    max_pairs: int = help_field(0, help="train policies on at most this many pairs (0: all)")
    eval_prompts: int = help_field(128, help="held-out prompts evaluated per policy")
    eval_samples: int = help_field(2, help="samples per prompt")
    max_new_tokens: int = help_field(48, help="longest sampled response")
    notebook: dict = help_field({}, help="the notebook's own parameters (its sweep), recorded with the shared ones")

    def validate(self) -> None:
        self._require(len(self.seeds) >= 1, "seeds", "at least one seed")
        self._require(0 < self.oracle_fraction <= 1, "oracle_fraction", "must be in (0, 1]")
        for name in ("oracle_beta", "oracle_epochs", "oracle_lr", "policy_epochs", "policy_lr"):
            self._require(getattr(self, name) > 0, name, "must be > 0")
        for name in ("batch_size", "eval_prompts", "eval_samples", "max_new_tokens"):
            self._require(getattr(self, name) >= 1, name, "must be >= 1")


def resolve(path: str | Path) -> Path:
    """A path as given if absolute, else relative to the repository root (notebooks run from notebooks/)."""
    path = Path(path)
    return path if path.is_absolute() else ROOT / path


def config_from(namespace: dict, notebook: tuple[str, ...] = (), cls=None) -> "ExperimentConfig":
    """An :class:`ExperimentConfig` (or ``cls``) from the variables of a notebook's parameters cell.

    ``notebook`` names the notebook's own parameters; their values are kept in ``config.notebook``
    so that the ``config.yaml`` written beside the metrics holds every parameter of the run.
    """
    cls = cls or ExperimentConfig
    values = {name: namespace[name] for name in cls.help() if name in namespace and name != "notebook"}
    if "seeds" in values:
        values["seeds"] = tuple(values["seeds"])
    missing = [name for name in notebook if name not in namespace]
    if missing:
        raise ConfigError(f"notebook parameter(s) {missing} are not defined in the parameters cell")
    return cls.from_dict(values, notebook={name: namespace[name] for name in notebook})


def world_config(name: str):
    """The :class:`~sepo.world.build.WorldConfig` named by an experiment's ``world`` parameter."""
    from sepo.world.build import WorldConfig, smoke_world_config

    if name == "smoke":
        return smoke_world_config()
    if name == "default":
        return WorldConfig.from_yaml(ROOT / "configs" / "mini" / "world.yaml")
    if Path(name).is_file():
        return WorldConfig.from_yaml(name)
    raise ConfigError(f"world = {name!r}: use 'smoke', 'default' or the path of a WorldConfig YAML")


def cached_run(stage: str, cls: type[StageConfig], values: dict[str, Any], run, cache_dir: Path,
               out_field: str = "output_dir") -> tuple[Path, dict]:
    """Run ``run(cls(**values))`` into ``cache_dir/stage/<fingerprint>`` unless that run already finished.

    The fingerprint covers every field of the validated config but ``out_field``, which is set to the
    run directory the fingerprint names.
    """
    provisional = cls.from_dict(values, **{out_field: str(Path(cache_dir) / stage)})  # validated before any work
    run_dir = Path(cache_dir) / stage / provisional.fingerprint(exclude=(out_field,))
    metrics_file = run_dir / "metrics.json"
    if metrics_file.exists():
        return run_dir, json.loads(metrics_file.read_text())
    return run_dir, run(dataclasses.replace(provisional, **{out_field: str(run_dir)}))


class Pipeline:
    """The mini world and cached runs of every stage, for one :class:`ExperimentConfig`."""

    def __init__(self, config: ExperimentConfig):
        from sepo.world.build import build_world

        self.config = config
        self.cache = resolve(config.cache_dir)
        self.world = build_world(world_config(config.world), root=self.cache / "world")
        self.derived = self.cache / "derived" / Path(self.world.root).name  # files made from this world
        self.derived.mkdir(parents=True, exist_ok=True)

    # --- data ---------------------------------------------------------------------------
    def data_path(self, world: str = "id") -> str:
        return str(self.world.preferences_path(world))

    def prompts_path(self, world: str = "id") -> str:
        """The world's held-out evaluation prompts as a JSONL prompt set (written once)."""
        prompts = self.world.eval_prompts(world)[: self.config.eval_prompts]
        path = self.derived / f"eval_prompts_{world}_{len(prompts)}.jsonl"
        if not path.exists():
            rows = [{"index": i, "instruction": p, "dataset": f"mini-{world}"} for i, p in enumerate(prompts)]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
            tmp.replace(path)
        return str(path)

    def sft_path(self, size: str, tokenizer: str = "a") -> str:
        return str(self.world.sft_path(size, tokenizer))

    # --- stages ---------------------------------------------------------------------------
    def oracle(self, seed: int, *, size: str | None = None, fraction: float | None = None, beta: float | None = None,
               world: str = "id", tokenizer: str = "a", epochs: float | None = None,
               data_path: str | None = None) -> tuple[Path, dict]:
        """DPO-train an oracle from the SFT model of ``size`` and score the ``world``'s training pairs.

        ``data_path`` replaces the world's pairs (its ``oracle`` split trains, its ``train`` split is scored).
        """
        from sepo.oracle import OracleConfig, run_oracle

        c = self.config
        values = dict(
            reference_path=self.sft_path(size or c.oracle_size, tokenizer),
            data_path=data_path or self.data_path(world), oracle_split="oracle", target_split="train", eval_split="eval",
            oracle_fraction=c.oracle_fraction if fraction is None else fraction,
            beta=c.oracle_beta if beta is None else beta,
            num_train_epochs=c.oracle_epochs if epochs is None else epochs, learning_rate=c.oracle_lr,
            per_device_batch_size=c.batch_size, seed=seed, logging_steps=10, max_length=128, max_prompt_length=32,
            score_batch_size=32,
        )
        return cached_run("oracle", OracleConfig, values, run_oracle, self.cache)

    def policy(self, recipe: Method, seed: int, *, size: str | None = None, data: str | None = None,
               world: str = "id", save_steps: int = 0, reference_path: str | None = None,
               epochs: float | None = None) -> tuple[Path, dict]:
        """Train a policy from the SFT model of ``size`` with ``recipe`` on ``data`` (an oracle run for SePO)."""
        from sepo.policy import PolicyConfig, run_policy

        c = self.config
        size = size or c.policy_size
        needs_reference = recipe.loss in ("dpo", "ipo", "selective_dpo")
        if needs_reference and reference_path is None:
            reference_path = self.sft_path(size)
        if data is None:
            if recipe.loss == "sepo":
                raise ConfigError(f"{recipe.name}: SePO trains on an oracle run's scores; pass data=<oracle run dir>")
            data = self.data_path(world)
        values = dict(
            model_path=self.sft_path(size), loss=recipe.loss, loss_kwargs=dict(recipe.loss_kwargs),
            reference_path=reference_path or "", data_path=str(data),
            split="" if recipe.loss == "sepo" or Path(data, "scored").is_dir() else "train",
            selection=recipe.selection, k_w=recipe.k_w, k_l=recipe.k_l, p=recipe.p, selection_seed=seed,
            num_train_epochs=c.policy_epochs if epochs is None else epochs, learning_rate=c.policy_lr, per_device_batch_size=c.batch_size,
            max_pairs=c.max_pairs, seed=seed, logging_steps=save_steps or 10, save_steps=save_steps, max_length=128,
            max_prompt_length=32, warmup_ratio=0.1,
        )
        return cached_run("policy", PolicyConfig, values, run_policy, self.cache)

    def evaluate(self, model_dir: str | Path, seed: int, *, size: str | None = None, world: str = "id",
                 reference_dir: str | None = None) -> dict:
        """Gold reward, gold win rate against the SFT model of ``size`` and KL to it, on held-out prompts."""
        from sepo.evaluate import EvalConfig, run_evaluate

        c = self.config
        values = dict(
            model_dir=str(Path(model_dir) / "model") if Path(model_dir, "model").is_dir() else str(model_dir),
            reference_dir=reference_dir or self.sft_path(size or c.policy_size),
            prompt_set=self.prompts_path(world), num_samples=c.eval_samples, max_new_tokens=c.max_new_tokens,
            seed=seed, batch_size=64, judge="gold", generator="policy", reference_generator="sft",
        )
        values["reference_outputs"] = self.reference_outputs(EvalConfig.from_dict(values, out_dir="-"))
        _, metrics = cached_run("evaluate", EvalConfig, values, lambda cfg: run_evaluate(cfg, gold=self.world.judge),
                                self.cache, out_field="out_dir")
        return summarize_evaluation(metrics)

    def reference_outputs(self, config) -> str:
        """The reference's samples for an :class:`~sepo.evaluate.EvalConfig` (drawn once, shared by every
        policy evaluated against that reference with the same prompts, seed and sampling)."""
        from sepo.evaluate import sample_reference_outputs

        key = config.fingerprint(exclude=("model_dir", "generator", "out_dir", "judge", "judge_model", "base_url",
                                          "api_key_env", "estimate_kl", "baseline_outputs", "reference_outputs",
                                          "lc_df_gamed_path"))
        path = self.derived / "reference_outputs" / f"{key}.json"
        if not path.exists():
            sample_reference_outputs(config, path)
        return str(path)


def summarize_evaluation(metrics: dict) -> dict[str, float]:
    """The numbers the tables report from one evaluation's metrics."""
    versus = metrics["vs_reference"]
    return {
        "win_rate": versus["win_rate"] / 100.0,
        "win_rate_se": versus["standard_error"] / 100.0,
        "reward": metrics["score_policy"]["mean"],
        "reward_se": metrics["score_policy"]["stderr"],
        "sft_reward": metrics["score_reference"]["mean"],
        "kl": metrics["kl"]["kl"],
        "kl_se": metrics["kl"]["kl_stderr"],
    }


def write_results(results_dir: str | Path, config: StageConfig, metrics: dict, tables: dict[str, Any] | None = None) -> Path:
    """Write a notebook's ``config.yaml``, ``metrics.json`` and markdown tables into ``results_dir``."""
    out = resolve(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config.to_yaml())
    write_json(out / "metrics.json", metrics)
    for name, frame in (tables or {}).items():
        text = frame.to_markdown(index=False, floatfmt=".3f") if hasattr(frame, "to_markdown") else str(frame)
        (out / f"{name}.md").write_text(text + "\n")
    return out


# --------------------------------------------------------------------------------------------
# Token-level analyses of an oracle run (notebooks 01-03, 09)
# --------------------------------------------------------------------------------------------
def gold_token_credit(scored, side: str) -> list[list[float]]:
    """Gold credit of every response token of a scored dataset (word credit carried by offsets)."""
    from sepo.world.judge import credit_to_tokens

    return [credit_to_tokens(c, o) for c, o in zip(scored[f"{side}_credit"], scored[f"{side}_offsets"])]


def token_agreement(scored, k: float = 0.3, seed: int = 0, score_columns: tuple[str, str] = ("chosen_scores", "rejected_scores")) -> dict[str, float]:
    """Oracle token rewards against gold credit: concentration (C1), rank and top-k agreement (R1)."""
    from sepo import analysis

    out: dict[str, float] = {}
    for side, column, largest in (("chosen", score_columns[0], True), ("rejected", score_columns[1], False)):
        scores, gold = scored[column], gold_token_credit(scored, side)
        for name, value in analysis.concentration(scores).items():
            out[f"{side}/oracle_{name}"] = value
        for name, value in analysis.concentration(gold).items():
            out[f"{side}/gold_{name}"] = value
        out[f"{side}/spearman"] = analysis.rank_agreement(scores, gold)
        for name, value in analysis.selection_agreement(scores, gold, k, largest=largest, seed=seed).items():
            out[f"{side}/{name}"] = value
    return out


def selected_tokens(scored, tokenizer, k: float = 0.3, top: int = 10):
    """Which tokens SePO's selection keeps most often, per side, against how common they are.

    One row per (side, token) among the ``top`` most selected: ``selected`` (count), ``share_of_selection``,
    ``share_of_tokens`` (its base rate among all response tokens of that side) and ``mean_gold_credit`` of
    its selected occurrences. A selection dominated by punctuation, EOS or function words shows here.
    """
    from collections import Counter, defaultdict

    import pandas as pd

    from sepo.selectors import select_from_scores

    chosen, rejected = select_from_scores(scored["chosen_scores"], scored["rejected_scores"], "sepo", k_w=k, k_l=k)
    rows = []
    for side, selections in (("chosen", chosen), ("rejected", rejected)):
        picked, seen, credit = Counter(), Counter(), defaultdict(float)
        for ids, mask, gold in zip(scored[f"{side}_ids"], selections, gold_token_credit(scored, side)):
            seen.update(ids)
            for token, keep, g in zip(ids, mask, gold):
                if keep:
                    picked[token] += 1
                    credit[token] += g
        n_picked, n_seen = sum(picked.values()), sum(seen.values())
        for token, count in picked.most_common(top):
            rows.append({"side": side, "token": repr(tokenizer.decode([token])), "selected": count,
                         "share_of_selection": count / n_picked, "share_of_tokens": seen[token] / n_seen,
                         "mean_gold_credit": credit[token] / count})
    return pd.DataFrame(rows)


def pair_walkthrough(pipe: Pipeline, oracle_dir: str | Path, index: int, k: float = 0.3) -> dict[str, Any]:
    """Everything the walkthrough shows for one scored pair: tokens, oracle rewards, gold credit, the
    SePO selection, and the SFT policy's per-token log-probs at the response tokens."""
    import torch
    from transformers import AutoTokenizer

    from sepo.data import build_sequences
    from sepo.logprobs import token_logps
    from sepo.selectors import select_from_scores
    from sepo.trainer import load_causal_lm

    scored = load_scored_run(oracle_dir)
    if not 0 <= index < len(scored):
        raise ConfigError(f"pair_index = {index}: the scored data has {len(scored)} pairs")
    row = scored[index]
    tokenizer = AutoTokenizer.from_pretrained(str(pipe.world.tokenizer_path))
    (sel_w,), (sel_l,) = select_from_scores([row["chosen_scores"]], [row["rejected_scores"]], "sepo", k_w=k, k_l=k)
    policy = load_causal_lm(pipe.sft_path(pipe.config.policy_size), "policy").eval()
    batch = build_sequences([row["prompt_ids"]] * 2, [row["chosen_ids"], row["rejected_ids"]], tokenizer.pad_token_id)
    with torch.no_grad():
        logps = token_logps(policy, batch["input_ids"], batch["attention_mask"])
    out = {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"],
           "chosen_gold": row.get("chosen_gold"), "rejected_gold": row.get("rejected_gold")}
    for i, side, sel in ((0, "chosen", sel_w), (1, "rejected", sel_l)):
        out[f"{side}_tokens"] = [tokenizer.decode([i]) for i in row[f"{side}_ids"]]  # readable text of each token
        out[f"{side}_ids"] = row[f"{side}_ids"]
        out[f"{side}_scores"] = row[f"{side}_scores"]
        out[f"{side}_credit"] = gold_token_credit(scored.select([index]), side)[0]
        out[f"{side}_selected"] = sel
        out[f"{side}_logps"] = logps[i][batch["response_mask"][i]].tolist()
    return out


def load_scored_run(run_dir: str | Path):
    from sepo.oracle import load_scored

    return load_scored(str(run_dir))


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
def _frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows)


def claim(statement: str, effects: list, verdicts: list[str], note: str = "") -> dict:
    """A claim record: statement, per-seed effects with 95% CIs, one verdict (see :mod:`sepo.stats`)."""
    from sepo import stats

    return {
        "statement": statement,
        "effects": [e.to_dict() for e in effects],
        "verdict": stats.combine(verdicts),
        "note": note,
    }


def train_and_evaluate(pipe: Pipeline, recipe: Method, seed: int, *, oracle_dir=None, size: str | None = None,
                       world: str = "id", data: str | None = None, reference_path: str | None = None) -> dict:
    """One policy run and its evaluation, as a table row."""
    run_dir, train_metrics = pipe.policy(recipe, seed, size=size, data=oracle_dir if recipe.loss == "sepo" else data,
                                         world=world, reference_path=reference_path)
    row = {"method": recipe.name, "seed": seed, **pipe.evaluate(run_dir, seed, size=size, world=world)}
    row["train_loss"] = train_metrics.get("train/loss", float("nan"))
    return row


def main_table(pipe: Pipeline, methods: list[str]) -> tuple[Any, dict]:
    """Every method from the same SFT model, per seed (C2, R5). SePO uses the seed's oracle."""
    from sepo import stats

    rows = []
    for seed in pipe.config.seeds:
        oracle_dir, _ = pipe.oracle(seed)
        sft = pipe.evaluate(pipe.sft_path(pipe.config.policy_size), seed)
        rows.append({"method": "SFT", "seed": seed, **sft, "train_loss": float("nan")})
        for name in methods:
            rows.append(train_and_evaluate(pipe, method(name), seed, oracle_dir=oracle_dir))
    frame = _frame(rows)
    by = {m: frame[frame.method == m].sort_values("seed") for m in frame.method.unique()}
    effects, verdicts = [], []
    for rival in [m for m in ("DPO", "IPO", "SimPO", "RRHF") if m in by and "SePO" in by]:
        e = stats.paired_effect(f"win rate vs SFT: SePO - {rival}", by["SePO"].win_rate.tolist(), by[rival].win_rate.tolist())
        effects.append(e)
        verdicts.append(stats.verdict(e))
    claims = {}
    if effects:
        claims["C2"] = claim("SePO (k=30%) beats DPO, IPO, SimPO and RRHF trained on all tokens (gold win rate vs SFT)",
                             effects, verdicts)
    if "SePO" in by:
        e = stats.effect("SePO win rate vs its own SFT model - 0.5", [w - 0.5 for w in by["SePO"].win_rate])
        claims["R5"] = claim("Win rate against the untrained SFT model itself (reported for every method)", [e],
                             [stats.verdict(e)])
    if "SePO" in by and "SePO-random" in by:
        e = stats.paired_effect("win rate: SePO - SePO with random tokens", by["SePO"].win_rate.tolist(),
                                by["SePO-random"].win_rate.tolist())
        claims["C2-control"] = claim("Choosing tokens by oracle reward beats random tokens of the same count", [e],
                                     [stats.verdict(e)])
    return frame, claims


def summary(frame, by: str | list[str] = "method", columns=("win_rate", "reward", "kl")):
    """Mean and 95% t-interval half-width over seeds of each column, per group."""
    from sepo import stats

    rows = []
    for key, group in frame.groupby(by, sort=False, dropna=False):  # keep rows whose key is NaN (e.g. DPO in 08)
        row = dict(zip([by] if isinstance(by, str) else by, key if isinstance(key, tuple) else (key,)))
        row["n_seeds"] = len(group)
        for column in columns:
            mean, low, high = stats.t_interval(group[column].tolist())
            row[column] = mean
            row[f"{column}_ci95"] = (high - low) / 2 if len(group) > 1 else float("nan")
        rows.append(row)
    return _frame(rows)


def oracle_fraction_sweep(pipe: Pipeline, fractions: list[float], k: float = 0.3, train_policies: bool = True) -> tuple[Any, dict]:
    """Oracle quality against the share of the oracle split it trains on (C6)."""
    from sepo import stats

    rows = []
    for seed in pipe.config.seeds:
        for fraction in fractions:
            oracle_dir, metrics = pipe.oracle(seed, fraction=fraction)
            agreement = token_agreement(load_scored_run(oracle_dir), k=k, seed=seed)
            row = {"fraction": fraction, "seed": seed, "oracle_pairs": metrics.get("data/oracle_pairs"),
                   "pair_accuracy": metrics.get("eval/rewards/accuracies", float("nan")),
                   "chosen_gold_mass": agreement["chosen/gold_mass"], "chosen_precision": agreement["chosen/precision"],
                   "rejected_precision": agreement["rejected/precision"], "random_precision": agreement["chosen/random_precision"],
                   "spearman": agreement["chosen/spearman"]}
            if train_policies:
                row.update({f"policy_{k_}": v for k_, v in
                            train_and_evaluate(pipe, method("SePO"), seed, oracle_dir=oracle_dir).items()
                            if k_ in ("win_rate", "reward", "kl")})
            rows.append(row)
    frame = _frame(rows)
    lo, hi = min(fractions), max(fractions)
    low, high = frame[frame.fraction == lo].sort_values("seed"), frame[frame.fraction == hi].sort_values("seed")
    effects = [stats.paired_effect(f"chosen precision vs gold: fraction {hi} - {lo}", high.chosen_precision.tolist(),
                                   low.chosen_precision.tolist())]
    if train_policies:
        effects.append(stats.paired_effect(f"SePO policy win rate: oracle fraction {hi} - {lo}",
                                           high.policy_win_rate.tolist(), low.policy_win_rate.tolist()))
    claims = {"C6": claim("An oracle trained on too little data selects worse (quality grows with its data)", effects,
                          [stats.verdict(e) for e in effects])}
    return frame, claims


def token_reward_report(pipe: Pipeline, k: float = 0.3) -> tuple[Any, dict]:
    """Concentration of token rewards (C1) and their agreement with gold credit (R1), per seed."""
    from sepo import stats

    import numpy as np

    from sepo.analysis import concentration

    rows = []
    for seed in pipe.config.seeds:
        oracle_dir, _ = pipe.oracle(seed)
        scored = load_scored_run(oracle_dir)
        row = {"seed": seed, **token_agreement(scored, k=k, seed=seed)}
        # the null of "dominated by a few tokens": Gaussian noise in responses of the same lengths
        # (for long responses the top 30% of |noise| hold 0.584 of it)
        rng = np.random.default_rng(seed)
        for side in ("chosen", "rejected"):
            noise = [rng.standard_normal(len(v)) for v in scored[f"{side}_scores"]]
            row[f"{side}/gaussian_top30"] = concentration(noise)["top30"]
        rows.append(row)
    frame = _frame(rows)
    c1 = [stats.paired_effect(f"share of |reward| in the top 30% of tokens ({side}) minus the same for Gaussian noise",
                              frame[f"{side}/oracle_top30"].tolist(), frame[f"{side}/gaussian_top30"].tolist())
          for side in ("chosen", "rejected")]
    r1 = [stats.paired_effect("chosen: precision of oracle top-k vs gold top-k, minus random", frame["chosen/precision"].tolist(),
                              frame["chosen/random_precision"].tolist()),
          stats.paired_effect("rejected: precision of oracle bottom-k vs gold bottom-k, minus random",
                              frame["rejected/precision"].tolist(), frame["rejected/random_precision"].tolist()),
          stats.effect("chosen: Spearman(oracle reward, gold credit)", frame["chosen/spearman"].tolist())]
    claims = {
        "C1": claim("A response's reward is dominated by a few tokens: the top 30% of tokens hold more of |reward| "
                    "than they would of Gaussian noise", c1, [stats.verdict(e) for e in c1],
                    "gold credit, for comparison: the top 30% of tokens hold "
                    f"{frame['chosen/gold_top30'].mean():.2f} (chosen) and {frame['rejected/gold_top30'].mean():.2f} (rejected)"),
        "R1": claim("Oracle token rewards rank tokens like the true per-token credit (better than chance)", r1,
                    [stats.verdict(e) for e in r1]),
    }
    return frame, claims


def _sweep(pipe: Pipeline, variants: list[tuple[str, Any, Method]], oracle_beta: dict | None = None) -> Any:
    """Train and evaluate SePO variants ``(parameter, value, recipe)`` for every seed."""
    rows = []
    for seed in pipe.config.seeds:
        for parameter, value, recipe in variants:
            beta = (oracle_beta or {}).get((parameter, value))
            oracle_dir, _ = pipe.oracle(seed, beta=beta)
            row = train_and_evaluate(pipe, recipe, seed, oracle_dir=oracle_dir)
            rows.append({"parameter": parameter, "value": value, **row})
    return _frame(rows)


def ablations(pipe: Pipeline, ks: list[float], k_ls: list[float], gammas: list[float], oracle_betas: list[float],
              ps: list[float]) -> tuple[Any, dict]:
    """SePO against k (k_w = k_l), k_l alone (k_w = 0.3), gamma, the oracle's beta, and adaptive selection (C3, R4)."""
    from sepo import stats

    sepo = method("SePO")
    variants = [("k", k, sepo.replace(name=f"SePO k={k}", k_w=k, k_l=k)) for k in ks]
    variants += [("k_l", k, sepo.replace(name=f"SePO k_l={k}", k_l=k)) for k in k_ls]
    variants += [("gamma", g, sepo.replace(name=f"SePO gamma={g}", loss_kwargs={"gamma": g})) for g in gammas]
    variants += [("oracle_beta", b, sepo.replace(name=f"SePO oracle beta={b}")) for b in oracle_betas]
    variants += [("adaptive_p", p, sepo.replace(name=f"SePO adaptive p={p}", selection="adaptive", p=p)) for p in ps]
    frame = _sweep(pipe, variants, oracle_beta={("oracle_beta", b): b for b in oracle_betas})

    def series(parameter, value):
        part = frame[(frame.parameter == parameter) & (frame.value == value)].sort_values("seed")
        return part.win_rate.tolist()

    effects, verdicts, notes = [], [], []
    if len(ks) >= 3:
        means = {k: float(sum(series("k", k)) / len(series("k", k))) for k in ks}
        interior = [k for k in ks if min(ks) < k < max(ks)]
        best = max(interior, key=means.get)
        rise = stats.paired_effect(f"win rate: k={best} (best interior) - k={min(ks)}", series("k", best), series("k", min(ks)))
        fall = stats.paired_effect(f"win rate: k={best} (best interior) - k={max(ks)}", series("k", best), series("k", max(ks)))
        effects += [rise, fall]
        verdicts += [stats.verdict(rise), stats.verdict(fall)]
        notes.append(f"the interior k was chosen as the best mean ({best}), which favours a rise-and-fall; read the CIs with that in mind")
    if len(k_ls) >= 2:
        e = stats.paired_effect(f"win rate: k_l={min(k_ls)} - k_l={max(k_ls)} (k_w=0.3)", series("k_l", min(k_ls)), series("k_l", max(k_ls)))
        effects.append(e)
        verdicts.append(stats.verdict(e))
    claims = {"C3": claim("Performance rises then falls with k; raising k_l past a point hurts", effects, verdicts, "; ".join(notes))}
    if len(gammas) >= 2:
        e = stats.paired_effect(f"win rate: gamma={max(gammas)} - gamma={min(gammas)}", series("gamma", max(gammas)),
                                series("gamma", min(gammas)))
        claims["C3-gamma"] = claim("SePO is sensitive to gamma (the scale of the selected-token log-probs)", [e],
                                   [stats.verdict(e) if e.mean >= 0 else stats.verdict(e, direction=-1)])
    if ps and 0.3 in ks:
        best_p = max(ps, key=lambda p: sum(series("adaptive_p", p)))
        e = stats.paired_effect(f"win rate: adaptive p={best_p} - fixed k=0.3", series("adaptive_p", best_p), series("k", 0.3))
        claims["R4"] = claim("Selecting by reward mass (adaptive count per response) matches or beats a fixed k=30%",
                             [e], [stats.verdict(e)], "positive: adaptive better; a CI spanning 0 means no detectable difference")
    return frame, claims


def weak_to_strong(pipe: Pipeline, oracle_sizes: list[str], policy_sizes: list[str]) -> tuple[Any, dict]:
    """Every oracle size x policy size, one tokenizer (C4)."""
    from sepo import stats

    rows = []
    for seed in pipe.config.seeds:
        for o in oracle_sizes:
            oracle_dir, _ = pipe.oracle(seed, size=o)
            for p in policy_sizes:
                row = train_and_evaluate(pipe, method("SePO"), seed, oracle_dir=oracle_dir, size=p)
                rows.append({"oracle_size": o, "policy_size": p, **row})
        for p in policy_sizes:
            rows.append({"oracle_size": "-", "policy_size": p, **train_and_evaluate(pipe, method("DPO"), seed, size=p)})
    frame = _frame(rows)
    weak, strong = oracle_sizes[0], policy_sizes[-1]
    cell = frame[(frame.oracle_size == weak) & (frame.policy_size == strong) & (frame.method == "SePO")].sort_values("seed")
    effects = [stats.effect(f"win rate vs own SFT - 0.5: {weak} oracle -> {strong} policy", [w - 0.5 for w in cell.win_rate])]
    same = frame[(frame.oracle_size == strong) & (frame.policy_size == strong) & (frame.method == "SePO")].sort_values("seed")
    if len(same) and weak != strong:
        effects.append(stats.paired_effect(f"win rate: {weak} oracle - {strong} oracle, {strong} policy",
                                           cell.win_rate.tolist(), same.win_rate.tolist()))
    verdicts = [stats.verdict(effects[0])]
    claims = {"C4": claim("A small oracle supervises a much larger policy (weak-to-strong)", effects, verdicts,
                          "the verdict reads the first effect; the second compares with an oracle of the policy's size")}
    return frame, claims


def mixed_data_path(pipe: Pipeline, oracle_world: str, target_world: str) -> str:
    """Pairs whose ``oracle`` split comes from one world and ``train`` split from another (``eval``: the oracle's)."""
    from datasets import DatasetDict, load_from_disk

    path = pipe.derived / f"mixed_{oracle_world}_{target_world}"
    if not (path / "dataset_dict.json").exists():
        source, target = load_from_disk(pipe.data_path(oracle_world)), load_from_disk(pipe.data_path(target_world))
        mixed = DatasetDict({"oracle": source["oracle"], "train": target["train"], "eval": source["eval"]})
        tmp = path.with_name(path.name + ".tmp")
        mixed.save_to_disk(str(tmp))
        tmp.replace(path)
    return str(path)


def frontier(pipe: Pipeline, run_dir: Path, label: str, seed: int, size: str | None = None, world: str = "id"):
    """Gold reward and KL to the SFT model at every checkpoint of a policy run (cached beside the run)."""
    import pandas as pd

    from sepo.evaluate import reward_kl_frontier
    from sepo.trainer import load_causal_lm, load_tokenizer

    c = pipe.config
    out = Path(run_dir) / f"frontier_{world}_{c.eval_prompts}x{c.eval_samples}_{c.max_new_tokens}_{seed}.csv"
    if out.exists():
        return pd.read_csv(out)
    sft = pipe.sft_path(size or c.policy_size)
    points = [(label, 0, sft)]
    checkpoints = sorted(Path(run_dir).glob("checkpoints/checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    points += [(label, int(p.name.split("-")[1]), str(p)) for p in checkpoints]
    final_step = json.loads((Path(run_dir) / "metrics.json").read_text()).get("train/global_step")
    if not checkpoints or points[-1][1] != final_step:  # a checkpoint at the last step already holds the final weights
        points.append((label, -1, str(Path(run_dir) / "model")))
    prompts = pipe.world.eval_prompts(world)[: c.eval_prompts]
    frame = reward_kl_frontier(points, load_causal_lm(sft, "sft").eval(), load_tokenizer(sft, "sft"), prompts, pipe.world.judge,
                               num_samples=c.eval_samples, max_new_tokens=c.max_new_tokens, seed=seed, batch_size=64)
    frame["seed"] = seed
    tmp = out.with_suffix(".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(out)
    return frame


def reward_at_kl(points, kl: float) -> float:
    """Gold reward along one frontier (sorted by KL), linearly interpolated at ``kl``."""
    import numpy as np

    ordered = points.sort_values("kl")
    return float(np.interp(kl, ordered.kl.to_numpy(), ordered.reward.to_numpy()))


def ood_and_overoptimization(pipe: Pipeline, methods: list[str], frontier_epochs: float, save_steps: int) -> tuple[Any, Any, dict]:
    """Train on out-of-distribution pairs, with the oracle from the in-distribution world (C5);
    reward-vs-KL frontiers over checkpoints, per method (R2). Evaluation is on in-distribution prompts."""
    from sepo import stats

    data = mixed_data_path(pipe, "id", "ood")
    rows, frontiers = [], []
    for seed in pipe.config.seeds:
        oracle_dir, _ = pipe.oracle(seed, data_path=data)  # in-distribution oracle scoring out-of-distribution pairs
        for name in methods:
            recipe = method(name)
            run_dir, _ = pipe.policy(recipe, seed, data=oracle_dir if recipe.loss == "sepo" else data,
                                     save_steps=save_steps, epochs=frontier_epochs)
            rows.append({"method": name, "seed": seed, **pipe.evaluate(run_dir, seed)})
            frontiers.append(frontier(pipe, run_dir, name, seed))
    import pandas as pd

    frame, curves = _frame(rows), pd.concat(frontiers, ignore_index=True)
    effects, verdicts = [], []
    by = {m: frame[frame.method == m].sort_values("seed") for m in frame.method.unique()}
    for rival in [m for m in methods if m != "SePO" and "SePO" in by]:
        e = stats.paired_effect(f"win rate vs SFT after OOD training: SePO - {rival}", by["SePO"].win_rate.tolist(),
                                by[rival].win_rate.tolist())
        effects.append(e)
        verdicts.append(stats.verdict(e))
    claims = {"C5": claim("Selecting key tokens on out-of-distribution data helps where all-token training over-optimizes",
                          effects, verdicts)}
    if "SePO" in by and "DPO" in by:
        matched = []
        for seed in pipe.config.seeds:
            a = curves[(curves.method == "SePO") & (curves.seed == seed)]
            b = curves[(curves.method == "DPO") & (curves.seed == seed)]
            kl = min(a.kl.max(), b.kl.max())
            matched.append(reward_at_kl(a, kl) - reward_at_kl(b, kl))
        e = stats.effect("gold reward at matched KL (largest KL both reach): SePO - DPO", matched)
        claims["R2"] = claim("Reward-vs-KL: SePO gets more gold reward than DPO for the same KL to the reference",
                             [e], [stats.verdict(e)])
    return frame, curves, claims



def selective_dpo_references(pipe: Pipeline, strong_size: str, quantiles: list[float]) -> tuple[Any, dict]:
    """Selective-DPO with a weak reference (the policy's own SFT model) and a strong one (a DPO-trained
    larger model), at several selection quantiles (0.6 keeps the top 40%)."""
    from sepo import stats

    rows = []
    for seed in pipe.config.seeds:
        strong_dir, _ = pipe.policy(method("DPO"), seed, size=strong_size)
        references = {"weak (policy SFT)": pipe.sft_path(pipe.config.policy_size), f"strong (DPO {strong_size})": str(strong_dir / "model")}
        for ref_name, ref_path in references.items():
            for q in quantiles:
                recipe = method("Selective-DPO").replace(name=f"Selective-DPO q={q}",
                                                        loss_kwargs={**method("Selective-DPO").loss_kwargs, "quantile": q})
                row = train_and_evaluate(pipe, recipe, seed, reference_path=ref_path)
                rows.append({"reference": ref_name, "quantile": q, **row})
        rows.append({"reference": "-", "quantile": float("nan"), **train_and_evaluate(pipe, method("DPO"), seed)})
    frame = _frame(rows)
    q = 0.6 if 0.6 in quantiles else quantiles[0]
    weak = frame[frame.reference.str.startswith("weak") & (frame["quantile"] == q)].sort_values("seed")  # frame.quantile is a method
    strong = frame[frame.reference.str.startswith("strong") & (frame["quantile"] == q)].sort_values("seed")
    e = stats.paired_effect(f"win rate vs SFT: strong - weak reference (quantile {q})", strong.win_rate.tolist(), weak.win_rate.tolist())
    claims = {"SDPO": claim("Selective-DPO selects better with a stronger reference", [e], [stats.verdict(e)])}
    return frame, claims


def carry_scores_to(scored, tokenizer, *, max_length: int = 128, max_prompt_length: int = 32):
    """Re-tokenise a scored dataset with another tokenizer and carry its token rewards by character offsets."""
    from sepo.data import tokenize_preferences
    from sepo.transfer import carry_column

    text = scored.select_columns([c for c in scored.column_names if not c.endswith(("_ids", "_offsets", "_scores")) and c != "row"])
    retokenized, _ = tokenize_preferences(text, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)
    for side in ("chosen", "rejected"):
        carried = carry_column(scored[f"{side}_scores"], scored[f"{side}_offsets"], retokenized[f"{side}_offsets"], retokenized["row"])
        retokenized = retokenized.add_column(f"{side}_scores", carried)
    return retokenized


def cross_tokenizer(pipe: Pipeline, k: float = 0.3) -> tuple[Any, dict]:
    """An oracle with a different tokenizer (B), its rewards carried to the policy's tokens (A), against
    the same-tokenizer oracle (R3): agreement with gold credit and the SePO policy it trains."""
    from transformers import AutoTokenizer

    from sepo import stats
    from sepo.utils import staged_dir

    tokenizer_a = AutoTokenizer.from_pretrained(str(pipe.world.tokenizer_path))
    rows = []
    for seed in pipe.config.seeds:
        same_dir, _ = pipe.oracle(seed)
        other_dir, _ = pipe.oracle(seed, tokenizer="b")
        carried_dir = Path(other_dir) / "carried_to_a"
        if not (carried_dir / "scored" / "dataset_info.json").exists():
            carried = carry_scores_to(load_scored_run(other_dir), tokenizer_a)
            with staged_dir(carried_dir) as tmp:
                carried.save_to_disk(str(tmp / "scored"))
                tokenizer_a.save_pretrained(str(tmp / "scored" / "tokenizer"))
        for label, run_dir in (("same tokenizer", same_dir), ("other tokenizer, carried", carried_dir)):
            agreement = token_agreement(load_scored_run(run_dir), k=k, seed=seed)
            row = train_and_evaluate(pipe, method("SePO"), seed, oracle_dir=run_dir)
            rows.append({"oracle": label, **row, "chosen_precision": agreement["chosen/precision"],
                         "random_precision": agreement["chosen/random_precision"], "spearman": agreement["chosen/spearman"]})
    frame = _frame(rows)
    same = frame[frame.oracle == "same tokenizer"].sort_values("seed")
    other = frame[frame.oracle != "same tokenizer"].sort_values("seed")
    effects = [stats.paired_effect("carried oracle: chosen precision minus random", other.chosen_precision.tolist(), other.random_precision.tolist()),
               stats.paired_effect("win rate: carried - same-tokenizer oracle", other.win_rate.tolist(), same.win_rate.tolist())]
    claims = {"R3": claim("Token rewards carried across tokenizers by character offsets still select informative tokens",
                          effects, [stats.verdict(effects[0])],
                          "the verdict reads the first effect; the second shows what is lost against a same-tokenizer oracle")}
    return frame, claims


def benchmark_evaluation(pipe: Pipeline, method_name: str, prompt_set: str, judge: str) -> dict[str, Any]:
    """Train one policy (as in the main table) and run the benchmark flow on it: sample it and its SFT
    model on ``prompt_set`` ("mini": the world's held-out prompts; or a benchmark of ``data/benchmarks``),
    judge the pairs with ``judge`` ("gold" offline; an LLM judge needs an API key), win rates and KL."""
    from sepo.evaluate import EvalConfig, run_evaluate

    c = pipe.config
    seed = c.seeds[0]
    recipe = method(method_name)
    oracle_dir = pipe.oracle(seed)[0] if recipe.loss == "sepo" else None
    run_dir, _ = pipe.policy(recipe, seed, data=oracle_dir)
    values = dict(
        model_dir=str(Path(run_dir) / "model"), reference_dir=pipe.sft_path(c.policy_size),
        prompt_set=pipe.prompts_path() if prompt_set == "mini" else prompt_set, max_prompts=c.eval_prompts,
        num_samples=c.eval_samples, max_new_tokens=c.max_new_tokens, seed=seed, batch_size=64, judge=judge,
        generator=f"{method_name}-{c.policy_size}", reference_generator=f"SFT-{c.policy_size}",
    )
    run_dir, metrics = cached_run("evaluate", EvalConfig, values, lambda cfg: run_evaluate(cfg, gold=pipe.world.judge), pipe.cache,
                                  out_field="out_dir")
    judge_label = "mini-world gold judge (VADER + degeneracy terms), not an LLM" if judge == "gold" else f"LLM judge: {judge}"
    return {"judge": judge_label, "prompt_set": prompt_set, "method": method_name, "outputs_dir": str(run_dir),
            "metrics": metrics, **({"summary": summarize_evaluation(metrics)} if "vs_reference" in metrics else {})}
