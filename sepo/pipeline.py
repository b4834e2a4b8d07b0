"""The mini world's pipeline: cached runs of every stage, for one :class:`ExperimentConfig`.

A :class:`Pipeline` builds (or loads) the world and runs the stages -- oracle, policy, evaluation --
each through its own ``run_<stage>`` function, under ``<cache>/<stage>/<key>/`` (:mod:`sepo.cache`:
the key hashes the stage's full config and the source of the code that runs it). Inputs are
themselves cached directories, so a change anywhere upstream changes every key downstream, and an
unchanged run is never repeated. Tables (:mod:`sepo.tables`) compose these runs; notebooks call the
tables and plot.

Seeds: one world per configuration; a seed changes the oracle's subset and training order, the
policy's training order and selection draws, and the evaluation samples.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from sepo.cache import cached_run, code_fingerprint
from sepo.config import StageConfig, help_field
from sepo.errors import ConfigError
from sepo.methods import Method, method
from sepo.utils import staged_dir

ROOT = Path(__file__).resolve().parent.parent


def resolve(path: str | Path) -> Path:
    """A path as given if absolute, else relative to the project root (notebooks run from notebooks/)."""
    path = Path(path)
    return path if path.is_absolute() else ROOT / path


def relative(path: str | Path) -> str:
    """``path`` relative to the project root (as results record run directories), '/'-separated."""
    return Path(os.path.relpath(Path(path).resolve(), ROOT)).as_posix()


@dataclasses.dataclass
class ExperimentConfig(StageConfig):
    """Parameters shared by the experiment notebooks (each notebook adds its own sweep, kept in ``notebook``).

    ``configs/mini/base.yaml`` holds the reproduction's values and ``configs/mini/smoke.yaml`` a
    configuration that runs in seconds; a notebook reads one of them (its ``experiment`` parameter).
    """

    world: str = help_field("smoke", help="'smoke' (seconds), 'default' (configs/mini/world.yaml) or a WorldConfig YAML path")
    cache_dir: str = help_field("cache", help="where worlds, models, scores and evaluations are cached by config and code")
    results_dir: str = help_field("results/scratch", help="where the notebook writes metrics, tables and figures")
    seeds: tuple[int, ...] = help_field((0,), help="seeds of oracle subsets, training order and evaluation samples")
    oracle_size: str = help_field("small", help="model size of the oracle (and of its reference)")
    oracle_fraction: float = help_field(1.0, help="fraction of the oracle split that trains the oracle")
    oracle_beta: float = help_field(0.1, help="DPO beta of the oracle; scale of the token rewards")
    oracle_epochs: float = help_field(3.0, help="epochs of oracle DPO training")
    oracle_lr: float = help_field(1e-3, help="learning rate of the oracle")
    oracle_batch_size: int = help_field(16, help="pairs per optimizer step of the oracle")
    policy_size: str = help_field("medium", help="model size of the policy")
    policy_epochs: float = help_field(1.0, help="epochs of policy training")
    policy_lr: float = help_field(3e-4, help="learning rate of the policy")
    batch_size: int = help_field(16, help="pairs per optimizer step of the policy")
    max_pairs: int = help_field(0, help="train policies on at most this many pairs (0: all)")
    method_settings: dict = help_field({}, help="per method, hyper-parameters that differ from the registries' defaults: "
                                                "{name: {loss_kwargs: {...}, selection_kwargs: {...}}}")
    max_length: int = help_field(128, help="longest prompt + response in tokens (oracle and policy training)")
    max_prompt_length: int = help_field(32, help="longest prompt in tokens (oracle and policy training)")
    warmup_ratio: float = help_field(0.1, help="share of policy training steps with a rising learning rate")
    logging_steps: int = help_field(10, help="steps between logged training metrics (oracle and policy)")
    length_buckets: int = help_field(1, help="oracle and policy training run each batch as this many groups of rows of "
                                             "similar length, each cut to its own longest row (less padding; the same "
                                             "loss up to float rounding)")
    score_batch_size: int = help_field(32, help="pairs per batch when the oracle scores tokens")
    eval_prompts: int = help_field(128, help="held-out test prompts evaluated per policy")
    validation_prompts: int = help_field(64, help="held-out validation prompts (after the test prompts) that choose a "
                                                  "method's learning rate when the table searches one")
    max_cutoff_share: float = help_field(1.0, help="the search passes over a setting whose validation samples hit "
                                                      "max_new_tokens without ending more often than this (1: none is passed "
                                                      "over; a cut-off sample already loses its comparison, EvalConfig.cutoff_loses)")
    policy_lr_grid: tuple[float, ...] = help_field((), help="learning rates searched per method in the main table, chosen by "
                                                            "gold win rate on the validation prompts (empty: policy_lr)")
    policy_knob_grid: dict = help_field({}, help="second stage of the main table's search: loss name -> {hyper-parameter: "
                                                 "values} (its beta or gamma), each value tried at the rate the first stage "
                                                 "chose, with the method's own value among them (empty: the rate only)")
    eval_samples: int = help_field(2, help="samples per prompt")
    snapshot_fractions: tuple[float, ...] = help_field((), help="fractions of a policy run's steps after which a table that "
                                                             "draws a reward-vs-KL frontier saves the weights (denser early)")
    frontier_samples: int = help_field(1, help="samples per test prompt at each frontier point (gold reward and KL)")
    eval_batch_size: int = help_field(64, help="prompts per sampling batch in evaluations")
    max_new_tokens: int = help_field(48, help="longest sampled response")
    threads: int = help_field(1, help="torch threads per process (set when the pipeline is built, at either tier): one, "
                                      "so that no number depends on the machine's core count (an operation split over "
                                      "more threads sums in another order); the reproduction runs notebooks side by "
                                      "side instead (python -m sepo.reproduce --workers)")
    tier: str = help_field("mini", help="'mini': the mini world (this package's reproduction); 'paper': the paper's "
                                        "models, data and LLM judges, set in `paper` (sepo.paper_tier)")
    paper: dict = help_field({}, help="the paper tier's models, data, judges and training settings "
                                      "(sepo.paper_tier.PaperTierConfig); ignored by the mini tier")
    notebook: dict = help_field({}, help="the notebook's own parameters (its sweep), recorded with the shared ones")

    def validate(self) -> None:
        self._require(len(self.seeds) >= 1, "seeds", "at least one seed")
        self._require(0 < self.oracle_fraction <= 1, "oracle_fraction", "must be in (0, 1]")
        self._require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        for name in ("oracle_beta", "oracle_epochs", "oracle_lr", "policy_epochs", "policy_lr"):
            self._require(getattr(self, name) > 0, name, "must be > 0")
        self._require(all(0 < f < 1 for f in self.snapshot_fractions), "snapshot_fractions", "fractions must be in (0, 1)")
        for name in ("batch_size", "oracle_batch_size", "eval_prompts", "eval_samples", "frontier_samples", "max_new_tokens", "max_length", "max_prompt_length",
                     "logging_steps", "score_batch_size", "eval_batch_size", "threads", "length_buckets"):
            self._require(getattr(self, name) >= 1, name, "must be >= 1")
        self._require(self.max_prompt_length < self.max_length, "max_prompt_length", "must be < max_length")
        self._require(self.validation_prompts >= 1, "validation_prompts", "must be >= 1")
        self._require(0 <= self.max_cutoff_share <= 1, "max_cutoff_share", "must be in [0, 1]")
        self._require(all(lr > 0 for lr in self.policy_lr_grid), "policy_lr_grid", "learning rates must be > 0")
        for name, settings in self.method_settings.items():
            method(name, settings)  # raises a ConfigError naming the method
        self._check_knob_grid()
        self._require(self.tier in ("mini", "paper"), "tier", "'mini' or 'paper'")
        if self.tier == "paper":
            from sepo.paper_tier import PaperTierConfig

            PaperTierConfig.from_dict(self.paper)  # raises a ConfigError naming the parameter


    def _check_knob_grid(self) -> None:
        from sepo.losses import LOSSES

        for loss, knobs in self.policy_knob_grid.items():
            self._require(loss in LOSSES, "policy_knob_grid", f"{loss!r} is not a registered loss ({sorted(LOSSES)})")
            self._require(isinstance(knobs, dict) and len(knobs) >= 1, "policy_knob_grid",
                          f"{loss}: a mapping of hyper-parameter -> values")
            for name, values in knobs.items():
                taken = LOSSES[loss].hyperparameters
                self._require(name in taken, "policy_knob_grid", f"{loss}.{name}: loss {loss!r} takes {sorted(taken)}")
                self._require(isinstance(values, (list, tuple)) and len(values) >= 1 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values),
                    "policy_knob_grid", f"{loss}.{name}: a list of positive numbers, got {values!r}")


def world_config(name: str):
    """The :class:`~sepo.world.build.WorldConfig` named by an experiment's ``world`` parameter."""
    from sepo.world.build import WorldConfig, smoke_world_config

    if name == "smoke":
        return smoke_world_config()
    if name == "default":
        return WorldConfig.from_yaml(ROOT / "configs" / "mini" / "world.yaml")
    if resolve(name).is_file():
        return WorldConfig.from_yaml(resolve(name))
    raise ConfigError(f"world = {name!r}: use 'smoke', 'default' or the path of a WorldConfig YAML")


def summarize_evaluation(metrics: dict) -> dict[str, float]:
    """The numbers the tables report from one evaluation's metrics (NaN for a reward or KL it did not measure:
    an LLM judge that only compares gives no reward)."""
    versus, nan = metrics["vs_reference"], {"mean": float("nan"), "stderr": float("nan")}
    kl = metrics.get("kl", {"kl": float("nan"), "kl_stderr": float("nan")})
    lengths = metrics.get("lengths_policy", {})
    return {
        "win_rate": versus["win_rate"] / 100.0,
        "win_rate_se": versus["standard_error"] / 100.0,
        "reward": metrics.get("score_policy", nan)["mean"],
        "reward_se": metrics.get("score_policy", nan)["stderr"],
        "sft_reward": metrics.get("score_reference", nan)["mean"],
        "kl": kl["kl"],
        "kl_se": kl["kl_stderr"],
        "sample_tokens": lengths.get("mean_tokens", float("nan")),
        "cutoff_share": lengths.get("cutoff_share", float("nan")),
    }


def _building(path: Path):
    """An exclusive lock for making the file or directory ``path`` (one process at a time, see
    :func:`sepo.cache.exclusive`); the lock file sits beside it, under ``.locks/``."""
    from sepo.cache import exclusive

    return exclusive(Path(path).parent / ".locks" / f"{Path(path).name}.lock")


def _trace_frontier(pipe: "Pipeline", run_dir, label: str, seed: int, size: str | None, world: str, out: Path) -> None:
    """Evaluate every saved point of a policy run (see :meth:`Pipeline.frontier`) into the CSV ``out``."""
    from sepo.evaluate import reward_kl_frontier
    from sepo.trainer import load_causal_lm, load_tokenizer, snapshot_steps
    from sepo.utils import write_text

    import pandas as pd

    c = pipe.config
    sft = pipe.sft_path(size or c.policy_size)
    checkpoints = [(int(p.name.split("-")[1]), p) for p in Path(run_dir).glob("checkpoints/checkpoint-*")]
    saved = sorted(dict(snapshot_steps(run_dir) + checkpoints).items())
    points = [(label, step, str(path)) for step, path in saved]
    final_step = json.loads((Path(run_dir) / "metrics.json").read_text()).get("train/global_step")
    if not saved or saved[-1][0] != final_step:  # a checkpoint at the last step already holds the final weights
        points.append((label, -1, str(Path(run_dir) / "model")))
    reference = load_causal_lm(sft, "sft").eval()
    frame = reward_kl_frontier(points, reference, load_tokenizer(sft, "sft"), pipe.eval_prompts(world), pipe.world.judge,
                               num_samples=c.frontier_samples, max_new_tokens=c.max_new_tokens, seed=seed,
                               batch_size=c.eval_batch_size)
    start = {**pipe.frontier_start(sft, seed, world), "method": label}  # step 0, the SFT model: every run of it shares it
    frame = pd.concat([pd.DataFrame([start], columns=frame.columns), frame], ignore_index=True)
    frame["seed"] = seed
    write_text(out, frame.to_csv(index=False))


class Pipeline:
    """The world of the experiment's tier and cached runs of every stage, for one :class:`ExperimentConfig`.

    ``tier: mini`` builds (or loads) the mini world; ``tier: paper`` holds a
    :class:`~sepo.paper_tier.PaperWorld` (named models, a preference dataset, LLM judges) that offers
    the same data, models and prompts, so that a notebook runs either tier unchanged.
    """

    def __init__(self, config: ExperimentConfig):
        from sepo.cache import exclusive, log_usage
        from sepo.world.build import build_world, world_dir, world_exists

        import torch

        self.config = config
        self.cache = resolve(config.cache_dir)
        self._heldout_pairs: dict = {}  # (world, tokenizer vocabulary) -> tokenised held-out pairs
        torch.set_num_threads(config.threads)  # before any key is made: cache keys name the thread count
        if config.tier == "paper":
            from sepo.paper_tier import PaperWorld

            self.world = PaperWorld(config, self.cache)  # stops here on a missing key, model or dataset
            self.derived = self.world.root / "derived"
            self.derived.mkdir(parents=True, exist_ok=True)
            return
        world = world_config(config.world)
        existed = world_exists(world, self.cache / "world")
        with exclusive(self.cache / "world" / ".locks" / f"{world_dir(world, self.cache / 'world').name}.lock"):
            self.world = build_world(world, root=self.cache / "world")
        log_usage(self.cache, "world", Path(self.world.root).name, built=not existed)
        self.derived = self.cache / "derived" / Path(self.world.root).name  # files made from this world
        self.derived.mkdir(parents=True, exist_ok=True)

    def method(self, name: str) -> Method:
        """The method ``name`` with this experiment's ``method_settings`` for it."""
        return method(name, self.config.method_settings.get(name))

    # --- data ---------------------------------------------------------------------------
    def data_path(self, world: str = "id") -> str:
        return str(self.world.preferences_path(world))

    def eval_prompts(self, world: str = "id", split: str = "test") -> list[str]:
        """Held-out prompts: the first ``eval_prompts`` are the test prompts, the next ``validation_prompts``
        the validation prompts (never both)."""
        prompts, c = self.world.eval_prompts(world), self.config
        if split == "test":
            return prompts[: c.eval_prompts]
        if split == "validation":
            if len(prompts) < c.eval_prompts + c.validation_prompts:
                raise ConfigError(f"the world holds {len(prompts)} {world} evaluation prompts: fewer than eval_prompts + "
                                  f"validation_prompts = {c.eval_prompts + c.validation_prompts}")
            return prompts[c.eval_prompts: c.eval_prompts + c.validation_prompts]
        raise ConfigError(f"prompt split {split!r}: 'test' or 'validation'")

    def prompts_path(self, world: str = "id", split: str = "test") -> str:
        """The world's held-out prompts of ``split`` as a JSONL prompt set (written once)."""
        from sepo.utils import write_text

        prompts = self.eval_prompts(world, split)
        name = f"eval_prompts_{world}_{len(prompts)}" if split == "test" else f"{split}_prompts_{world}_{self.config.eval_prompts}_{len(prompts)}"
        path = self.derived / f"{name}.jsonl"
        if not path.exists():
            rows = [{"index": i, "instruction": p, "dataset": f"mini-{world}"} for i, p in enumerate(prompts)]
            write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    def sft_path(self, size: str, tokenizer: str = "a") -> str:
        return str(self.world.sft_path(size, tokenizer))

    def mixed_data_path(self, oracle_world: str, target_world: str) -> str:
        """Pairs whose ``oracle`` split comes from one world and ``train`` split from another (``eval``: the oracle's)."""
        from datasets import DatasetDict, load_from_disk

        path = self.derived / f"mixed_{oracle_world}_{target_world}"
        with _building(path):
            if (path / "dataset_dict.json").exists():
                return str(path)
            source, target = load_from_disk(self.data_path(oracle_world)), load_from_disk(self.data_path(target_world))
            mixed = DatasetDict({"oracle": source["oracle"], "train": target["train"], "eval": source["eval"]})
            with staged_dir(path) as tmp:
                mixed.save_to_disk(str(tmp))
        return str(path)



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
            per_device_batch_size=c.oracle_batch_size, seed=seed, logging_steps=c.logging_steps, max_length=c.max_length,
            max_prompt_length=c.max_prompt_length, score_batch_size=c.score_batch_size,
            reference_cache_dir=str(self.cache / "reference_logps"),  # the reference's log-probs, shared by its oracles
            length_buckets=c.length_buckets,
        )
        values.update(self._tier_values("oracle"))
        return cached_run("oracle", OracleConfig, values, self._runner("oracle", run_oracle), self.cache)

    def policy(self, recipe: Method, seed: int, *, size: str | None = None, data: str | None = None,
               world: str = "id", save_steps: int = 0, reference_path: str | None = None,
               epochs: float | None = None, lr: float | None = None, snapshots: bool = False) -> tuple[Path, dict]:
        """Train a policy from the SFT model of ``size`` with ``recipe``.

        ``snapshots``: save the weights at ``snapshot_fractions`` of the run (the points of its frontier).

        ``data``: for a method that trains on token selections, an oracle run's directory (its scores);
        otherwise preference data (default: the ``world``'s pairs). A method whose loss needs a
        reference gets ``reference_path`` (default: the policy's own SFT model).
        """
        from sepo.policy import PolicyConfig, run_policy

        c = self.config
        size = size or c.policy_size
        if recipe.needs_reference and reference_path is None:
            reference_path = self.sft_path(size)
        if data is None:
            if recipe.needs_selection:
                raise ConfigError(f"{recipe.name}: loss {recipe.loss!r} trains on an oracle run's token scores; "
                                  "pass data=<oracle run dir>")
            data = self.data_path(world)
        values = dict(
            model_path=self.sft_path(size), loss=recipe.loss, loss_kwargs=dict(recipe.loss_kwargs),
            reference_path=reference_path or "", data_path=str(data),
            split="" if recipe.needs_selection or Path(data, "scored").is_dir() else "train",
            selection_seed=seed,
            num_train_epochs=c.policy_epochs if epochs is None else epochs, learning_rate=c.policy_lr if lr is None else lr,
            per_device_batch_size=c.batch_size, max_pairs=c.max_pairs, seed=seed,
            logging_steps=save_steps or c.logging_steps, save_steps=save_steps, max_length=c.max_length,
            max_prompt_length=c.max_prompt_length, warmup_ratio=c.warmup_ratio,
            snapshot_fractions=tuple(c.snapshot_fractions) if snapshots else (), length_buckets=c.length_buckets,
        )
        if recipe.needs_selection:
            values.update(selector=recipe.selector, selection_kwargs=dict(recipe.selection_kwargs))
        if recipe.needs_reference:  # its log-probs of the pairs, computed once and shared by every run against it
            values["reference_cache_dir"] = str(self.cache / "reference_logps")
        values.update(self._tier_values("policy"))
        return cached_run("policy", PolicyConfig, values, self._runner("policy", run_policy), self.cache)

    def evaluate(self, model_dir: str | Path, seed: int, *, size: str | None = None, world: str = "id",
                 reference_dir: str | None = None, split: str = "test") -> dict:
        """Gold reward, gold win rate against the SFT model of ``size`` and KL to it, on the held-out prompts
        of ``split``; ``eval_run`` names the evaluation's run directory (relative to the project)."""
        from sepo.evaluate import EvalConfig, run_evaluate

        c = self.config
        if c.tier == "paper":  # the configured LLM-judged benchmarks instead of the gold judge
            from sepo.paper_tier import evaluate_benchmarks

            model = str(Path(model_dir) / "model") if Path(model_dir, "model").is_dir() else str(model_dir)
            return evaluate_benchmarks(self, model, reference_dir or self.sft_path(size or c.policy_size), seed)
        values = dict(
            model_dir=str(Path(model_dir) / "model") if Path(model_dir, "model").is_dir() else str(model_dir),
            reference_dir=reference_dir or self.sft_path(size or c.policy_size),
            prompt_set=self.prompts_path(world, split), num_samples=c.eval_samples, max_new_tokens=c.max_new_tokens,
            seed=seed, batch_size=c.eval_batch_size, judge="gold", generator="policy", reference_generator="sft",
            cutoff_loses=True,  # the gold reward reads text alone: a sample that never ended is not a finished answer
        )
        values["reference_outputs"] = self.reference_outputs(EvalConfig.from_dict(values, out_dir="-"))
        run_dir, metrics = cached_run("evaluate", EvalConfig, values, lambda cfg: run_evaluate(cfg, gold=self.world.judge),
                                      self.cache, out_field="out_dir")
        return {**summarize_evaluation(metrics), "eval_run": relative(run_dir)}

    def _tier_values(self, stage: str) -> dict[str, Any]:
        """Stage settings the tier adds (none at the mini tier, so its cache keys are unchanged)."""
        return self.world.stage_values(stage) if self.config.tier == "paper" else {}

    def _runner(self, stage: str, run):
        """How a training stage runs: in this process, or as an accelerate launch at the paper tier."""
        return self.world.runner(stage, run) if self.config.tier == "paper" else run

    def eval_values(self, judge: str = "") -> dict[str, Any]:
        """Evaluation settings the tier adds for ``judge`` (the paper tier: chat prompts, the judge's server,
        the benchmark's baseline); none at the mini tier."""
        return self.world.eval_values(judge) if self.config.tier == "paper" else {}

    def reference_outputs(self, config) -> str:
        """The reference's samples for an :class:`~sepo.evaluate.EvalConfig` (drawn once, shared by every
        policy evaluated against that reference with the same prompts, seed and sampling)."""
        from sepo.cache import cache_key
        from sepo.evaluate import sample_reference_outputs

        fingerprint = config.fingerprint(exclude=("model_dir", "generator", "out_dir", "judge", "judge_model", "base_url",
                                                  "api_key_env", "estimate_kl", "baseline_outputs", "reference_outputs",
                                                  "cutoff_loses",
                                                  "lc_df_gamed_path"))
        path = self.derived / "reference_outputs" / f"{cache_key(fingerprint, code_fingerprint('reference_outputs'))}.json"
        if not path.exists():
            with _building(path):
                if not path.exists():
                    sample_reference_outputs(config, path)
        return str(path)

    def frontier(self, run_dir: str | Path, label: str, seed: int, size: str | None = None, world: str = "id"):
        """Gold reward and KL to the SFT model at the SFT model (step 0), every snapshot and checkpoint of a policy
        run, and its final weights (step -1, unless a checkpoint holds them), on the test prompts with
        ``frontier_samples`` samples each (cached beside the run)."""
        import pandas as pd

        c = self.config
        if self.world.judge is None:  # a world without a gold reward (the paper tier): no frontier to trace
            return pd.DataFrame(columns=["method", "step", "kl", "kl_stderr", "reward", "reward_stderr", "n_prompts", "seed"])
        code = code_fingerprint("frontier")
        out = Path(run_dir) / f"frontier_{world}_{c.eval_prompts}x{c.frontier_samples}_{c.max_new_tokens}_{seed}_{code}.csv"
        if not out.exists():
            with _building(out):
                if not out.exists():
                    _trace_frontier(self, run_dir, label, seed, size, world, out)
        return pd.read_csv(out)

    def frontier_start(self, sft: str, seed: int, world: str = "id") -> dict:
        """The first point of every frontier from the SFT model ``sft`` (step 0: the model itself, KL 0), drawn
        once per seed and world with the frontier's sampling settings and kept under the world's derived files."""
        import hashlib

        from sepo.cache import cache_key
        from sepo.evaluate import reward_kl_frontier
        from sepo.trainer import load_causal_lm, load_tokenizer
        from sepo.utils import write_json

        c = self.config
        what = json.dumps([str(Path(sft).resolve()), world, seed, c.eval_prompts, c.frontier_samples, c.max_new_tokens,
                           c.eval_batch_size])
        path = self.derived / "frontier_start" / f"{cache_key(hashlib.sha256(what.encode()).hexdigest(), code_fingerprint('frontier'))}.json"
        if not path.exists():
            with _building(path):
                if not path.exists():
                    reference = load_causal_lm(sft, "sft").eval()
                    frame = reward_kl_frontier([("SFT", 0, reference)], reference, load_tokenizer(sft, "sft"),
                                               self.eval_prompts(world), self.world.judge, num_samples=c.frontier_samples,
                                               max_new_tokens=c.max_new_tokens, seed=seed, batch_size=c.eval_batch_size)
                    write_json(path, frame.drop(columns=["method"]).iloc[0].to_dict())
        return json.loads(path.read_text())

    def diagnose(self, model_dir: str | Path, size: str | None = None, world: str = "id") -> dict[str, float]:
        """Held-out likelihoods of a model (:mod:`sepo.diagnostics`) and their change from the SFT model of
        ``size``: ``chosen_logp``, ``rejected_logp``, ``eos_logp`` and ``d_<each>`` (model minus SFT)."""
        sft = self._heldout(self.sft_path(size or self.config.policy_size), world)
        own = self._heldout(str(Path(model_dir) / "model") if Path(model_dir, "model").is_dir() else str(model_dir), world)
        return {**{k: own[k] for k in ("chosen_logp", "rejected_logp", "eos_logp")},
                **{f"d_{k}": own[k] - sft[k] for k in ("chosen_logp", "rejected_logp", "eos_logp")}}

    def _heldout(self, model_path: str, world: str) -> dict[str, float]:
        import hashlib

        from sepo.cache import cache_key

        c = self.config
        what = json.dumps([str(Path(model_path).resolve()), world, c.max_length, c.max_prompt_length])
        path = self.derived / "heldout" / f"{cache_key(hashlib.sha256(what.encode()).hexdigest(), code_fingerprint('diagnostics'))}.json"
        if path.exists():
            return json.loads(path.read_text())
        with _building(path):
            if not path.exists():
                self._write_heldout(model_path, world, path)
        return json.loads(path.read_text())

    def _write_heldout(self, model_path: str, world: str, path: Path) -> None:
        from datasets import load_from_disk

        from sepo.diagnostics import heldout_logps
        from sepo.trainer import load_causal_lm, load_tokenizer
        from sepo.utils import write_json

        c = self.config
        tokenizer = load_tokenizer(model_path, "model", getattr(self.world, "chat_template", ""))
        vocabulary = json.dumps(tokenizer.get_vocab(), sort_keys=True)  # the same pairs tokenised once per tokenizer
        if (world, vocabulary) not in self._heldout_pairs:
            from sepo.data import tokenize_preferences

            pairs = load_from_disk(self.data_path(world))["eval"]
            self._heldout_pairs[world, vocabulary] = tokenize_preferences(
                pairs, tokenizer, max_length=c.max_length, max_prompt_length=c.max_prompt_length)[0]
        result = heldout_logps(load_causal_lm(model_path, "model"), tokenizer, self._heldout_pairs[world, vocabulary],
                               max_length=c.max_length, max_prompt_length=c.max_prompt_length)
        write_json(path, result)

    def carried_scores(self, oracle_dir: str | Path, tokenizer) -> Path:
        """An oracle run's token scores carried to ``tokenizer``'s tokens by character offsets (cached
        beside the run); a directory that :func:`sepo.oracle.load_scored` and the policy stage read."""
        from sepo.oracle import load_scored, save_data_record, scored_data_record
        from sepo.transfer import carry_scores_to

        carried_dir = Path(oracle_dir) / f"carried_{code_fingerprint('carried')}"
        with _building(carried_dir):
            if (carried_dir / "scored" / "dataset_info.json").exists():
                return carried_dir
            c = self.config
            carried, report = carry_scores_to(load_scored(str(oracle_dir)), tokenizer, max_length=c.max_length,
                                              max_prompt_length=c.max_prompt_length)
            source = scored_data_record(oracle_dir)["source"]
            with staged_dir(carried_dir) as tmp:
                carried.save_to_disk(str(tmp / "scored"))
                tokenizer.save_pretrained(str(tmp / "scored" / "tokenizer"))
                save_data_record(tmp / "scored", f"{source}, scores carried to the policy's tokenizer", report)
        return carried_dir
