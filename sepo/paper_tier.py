"""The paper tier's "world": named models, a TRL-format preference dataset and LLM judges.

At ``tier: paper`` a :class:`~sepo.pipeline.Pipeline` holds a :class:`PaperWorld` where the mini tier
holds a built mini world, and offers the notebooks the same things: ``preferences_path(world)`` (the
preference data split once into ``oracle`` / ``train`` / ``eval`` and cached), ``eval_prompts(world)``,
``sft_path(size)`` (the configured model of a size: a local path or a Hub id), ``tokenizer_path``,
``root`` and ``judge`` -- ``None`` here: policies are judged by the configured LLM benchmarks
(AlpacaEval 2, MT-Bench, Arena-Hard) instead of a gold judge, and cells that need a world's gold
credit are not reached.

Everything that can stop a paper run stops when the pipeline is built, before any training or
sampling: a model or dataset that is neither a local path nor in the Hugging Face cache nor on a
reachable Hub, a judge whose API key variable is not set, malformed preference rows.

The paper tier's own parameters are one mapping, ``paper`` of :class:`~sepo.pipeline.ExperimentConfig`,
checked by :class:`PaperTierConfig`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sepo.config import StageConfig, help_field
from sepo.errors import ConfigError

BENCHMARKS = ("alpaca_eval", "mt_bench", "arena_hard")
WORLDS = ("id", "ood")  # the target data and, for the out-of-distribution notebook, the other data


@dataclasses.dataclass
class PaperTierConfig(StageConfig):
    """The paper tier's parameters (``paper:`` in an experiment YAML). Sizes named by the experiment
    (``oracle_size``, ``policy_size``, a notebook's sweep) are keys of ``models``."""

    models: dict = help_field({}, help="model of each size name: a local directory or a Hub id (the SFT model that "
                                      "oracles and policies of that size start from)")
    data: str = help_field("", help="TRL-format preference data: Hub id, save_to_disk directory or json/jsonl/parquet "
                                    "file (UltraFeedback's whole-conversation layout is split into prompt and last turn)")
    train_split: str = help_field("train_prefs", help="split of data whose pairs train the oracle and the policies")
    eval_split: str = help_field("test_prefs", help="held-out split of data (oracle accuracy, held-out diagnostics)")
    oracle_share: float = help_field(0.5, help="share of train_split (shuffled with split_seed) set aside to train oracles; "
                                               "the rest is the policies' training data")
    split_seed: int = help_field(0, help="seed of the oracle / train shuffle of train_split")
    max_eval_pairs: int = help_field(2000, help="held-out pairs kept from eval_split (0: all)")
    ood_data: str = help_field("", help="preference data of the 'ood' world (e.g. HH-RLHF in TRL's layout), "
                                        "the training data of the out-of-distribution notebook ('' : none)")
    ood_split: str = help_field("train", help="split of ood_data")
    chat_template: str = help_field("", help="Jinja chat template (file) for tokenizers without one (Pythia)")
    drop_prompt_longer_than: int = help_field(0, help="drop pairs whose prompt has more tokens than this (0: keep)")
    drop_response_shorter_than: int = help_field(0, help="drop pairs with a response shorter than this in tokens (0: keep)")
    gradient_accumulation_steps: int = help_field(1, help="forward passes per optimizer step (oracle and policy)")
    bf16: bool = help_field(False, help="bfloat16 training and sampling (GPU)")
    gradient_checkpointing: bool = help_field(False, help="recompute activations in backward")
    lr_scheduler_type: str = help_field("linear", help="transformers scheduler name of oracle and policy training")
    accelerate_config: str = help_field("", help="accelerate config file: oracle and policy training run as "
                                                 "'accelerate launch' subprocesses ('' : in this process)")
    num_processes: int = help_field(1, help="processes of accelerate launch (GPUs)")
    benchmarks: list = help_field(["alpaca_eval"], help=f"LLM-judged benchmarks of every policy, from {BENCHMARKS}; "
                                                        "the first gives the table's win rate against the SFT model")
    judge_model: str = help_field("", help="judge model ('' : each benchmark's official judge)")
    base_url: str = help_field("", help="OpenAI-compatible API base URL of the judge ('' : OpenAI)")
    api_key_env: str = help_field("OPENAI_API_KEY", help="environment variable holding the judge's API key")
    baseline_outputs: dict = help_field({}, help="per benchmark, a fixed baseline's outputs in AlpacaEval's layout "
                                                 "(AlpacaEval 2: gpt4_turbo; Arena-Hard: gpt-4-0314)")
    lc_df_gamed_path: str = help_field("", help="local df_gamed.csv for AlpacaEval 2's length-controlled win rate")
    temperature: float = help_field(1.0, help="sampling temperature of the evaluations")
    bootstrap_rounds: int = help_field(100, help="bootstrap rounds of Arena-Hard's interval")
    device: str = help_field("cpu", help="device of evaluation sampling ('cuda')")

    def validate(self) -> None:
        self._require(bool(self.models), "paper.models", "name at least one model: {size: local path or Hub id}")
        self._require(bool(self.data), "paper.data", "a preference dataset: Hub id or local path")
        self._require(0 < self.oracle_share < 1, "paper.oracle_share", "must be in (0, 1)")
        self._require(self.gradient_accumulation_steps >= 1, "paper.gradient_accumulation_steps", "must be >= 1")
        self._require(self.num_processes >= 1, "paper.num_processes", "must be >= 1")
        unknown = [b for b in self.benchmarks if b not in BENCHMARKS]
        self._require(not unknown, "paper.benchmarks", f"{unknown}: use names from {BENCHMARKS}")
        unknown = sorted(set(self.baseline_outputs) - set(self.benchmarks))
        self._require(not unknown, "paper.baseline_outputs", f"{unknown} are not in benchmarks")


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_stamp(name: str) -> list:
    """What identifies a local data source's content cheaply: every file's path, size and modification time
    (a Hub id is named as given)."""
    from sepo.pipeline import resolve

    path = resolve(name) if name else None
    if path is None or not path.exists():
        return [name]
    # (datasets writes its own cache-*.arrow files beside a saved dataset it maps: not the data)
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith("cache-"))
    return [[str(f.relative_to(path.parent)), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _preparation_code() -> str:
    """The source of the code that prepares the splits: prepared data made by other code is not reused."""
    import inspect

    from sepo import paper
    from sepo.trainer import load_preferences

    return _digest(inspect.getsource(paper), inspect.getsource(load_preferences),
                   inspect.getsource(PaperWorld.preferences_path))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def check_available(name: str, field: str, repo_type: str) -> None:
    """Stop unless ``name`` is a local path, is in the Hugging Face cache, or the Hub answers for it."""
    from sepo.pipeline import resolve

    if resolve(name).exists() or Path(name).exists():
        return
    if name.count("/") != 1:
        raise ConfigError(f"{field} = {name!r}: no such local path, and not a Hub id (owner/name)")
    from huggingface_hub import HfApi, snapshot_download

    try:
        snapshot_download(name, repo_type=repo_type, local_files_only=True)
        return
    except Exception:  # noqa: BLE001 -- not in the local cache: ask the Hub
        pass
    how = (f"download it first (huggingface-cli download {'--repo-type dataset ' if repo_type == 'dataset' else ''}{name}), "
           "or give a local path; a gated repo also needs HF_TOKEN")
    if _offline():
        raise ConfigError(f"{field} = {name!r}: not in the Hugging Face cache and HF_HUB_OFFLINE is set; {how}")
    try:
        HfApi().repo_info(name, repo_type=repo_type, timeout=10)
    except Exception as err:  # noqa: BLE001 -- unreachable Hub, unknown or gated repo
        raise ConfigError(f"{field} = {name!r}: the Hugging Face Hub did not answer ({type(err).__name__}: {err}); {how}") from None


class PaperWorld:
    """Named models, one preference dataset (and an optional out-of-distribution one) and LLM judges."""

    judge = None  # no gold judge: evaluations use the configured LLM benchmarks

    def __init__(self, config, cache: Path):
        from sepo.pipeline import resolve

        self.config = config
        self.paper = PaperTierConfig.from_dict(config.paper)
        self.cache = Path(cache)
        p = self.paper
        template = resolve(p.chat_template) if p.chat_template else None
        if template is not None and not template.is_file():
            raise ConfigError(f"paper.chat_template = {p.chat_template!r}: no such file")
        # the template's text, not its path, goes into the stage configs: their cache keys follow its content
        self.chat_template = template.read_text() if template is not None else ""
        # 1. everything that can stop the run, before any training or sampling
        if p.benchmarks and not os.environ.get(p.api_key_env):
            raise ConfigError(f"the benchmarks {list(p.benchmarks)} are judged by an LLM: set the environment variable "
                              f"{p.api_key_env} to the judge's API key (paper.api_key_env names the variable"
                              f"{', paper.base_url the server' if p.base_url else ''})")
        for size in self.sizes_used():
            check_available(self.sft_path(size), f"paper.models.{size}", "model")
            if p.benchmarks:
                self._check_chat_template(size)
        for field, name in (("paper.data", p.data), ("paper.ood_data", p.ood_data)):
            if name:
                check_available(name, field, "dataset")
        for name, path in p.baseline_outputs.items():
            if not resolve(path).is_file():
                raise ConfigError(f"paper.baseline_outputs.{name} = {path!r}: no such file")
        if p.accelerate_config and not resolve(p.accelerate_config).is_file():
            raise ConfigError(f"paper.accelerate_config = {p.accelerate_config!r}: no such file")
        # 2. the data, split once (malformed rows stop here, naming the file and row)
        self.root = self.cache / "paper" / _digest(p.data, p.train_split, p.eval_split, p.oracle_share, p.split_seed,
                                                   p.max_eval_pairs, p.ood_data, p.ood_split, _source_stamp(p.data),
                                                   _source_stamp(p.ood_data), _preparation_code())
        for world in WORLDS:
            if world == "id" or p.ood_data:
                self.preferences_path(world)

    def sizes_used(self) -> list[str]:
        """The model sizes this experiment names: ``oracle_size``, ``policy_size`` and any in the notebook's sweep."""
        named = [self.config.oracle_size, self.config.policy_size]

        def walk(value):
            if isinstance(value, str):
                named.append(value)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    walk(item)

        for name, value in self.config.notebook.items():
            if name != "experiment":
                walk(value)
        sizes = [s for s in dict.fromkeys(named) if s in self.paper.models]
        for size in (self.config.oracle_size, self.config.policy_size):
            if size not in self.paper.models:
                raise ConfigError(f"model size {size!r} is not in paper.models (known: {sorted(self.paper.models)})")
        return sizes

    def _check_chat_template(self, size: str) -> None:
        """The benchmarks send chat prompts, rendered by the model's own template (the SFT stage saves it)."""
        from sepo.trainer import load_tokenizer

        if not getattr(load_tokenizer(self.sft_path(size), f"paper.models.{size}"), "chat_template", None):
            raise ConfigError(f"paper.models.{size} = {self.paper.models[size]!r}: its tokenizer has no chat template, and "
                              "the benchmarks prompt every policy and its SFT model as a chat; use an SFT model made "
                              "with `python -m sepo sft` (which saves its template) or one whose tokenizer has a template")

    # --- what a Pipeline reads from a world -------------------------------------------------
    def sft_path(self, size: str, tokenizer: str = "a") -> str:
        from sepo.pipeline import resolve

        if tokenizer != "a":
            raise ConfigError(f"tokenizer {tokenizer!r}: the paper tier's models each carry their own tokenizer")
        if size not in self.paper.models:
            raise ConfigError(f"model size {size!r} is not in paper.models (known: {sorted(self.paper.models)})")
        name = str(self.paper.models[size])
        return str(resolve(name)) if resolve(name).exists() else name

    @property
    def tokenizer_path(self) -> str:
        return self.sft_path(self.config.policy_size)

    def preferences_path(self, world: str = "id") -> Path:
        """The ``world``'s pairs as a saved DatasetDict with splits ``oracle``, ``train`` and ``eval`` in TRL's
        conversational layout (``id``: ``data``; ``ood``: ``ood_data`` for ``train`` and ``data`` for the others)."""
        from datasets import DatasetDict

        from sepo.paper import is_conversation_layout, to_conversational
        from sepo.trainer import load_preferences, data_source
        from sepo.utils import staged_dir

        p = self.paper
        if world not in WORLDS or (world == "ood" and not p.ood_data):
            raise ConfigError(f"world {world!r}: the paper tier has 'id' (paper.data)"
                              f"{' and ood (paper.ood_data)' if p.ood_data else '; set paper.ood_data for ood'}")
        path = self.root / world
        if (path / "dataset_dict.json").exists():
            return path

        def load(name: str, split: str):
            data = load_preferences(name, split, "paper.data" if name == p.data else "paper.ood_data")
            if is_conversation_layout(data):
                data = to_conversational(data, data_source(name, split))
            return data.select_columns([c for c in data.column_names if c in ("prompt", "chosen", "rejected", "row", "line")])

        pool = load(p.data, p.train_split).shuffle(seed=p.split_seed)
        n_oracle = int(round(p.oracle_share * len(pool)))
        if not 0 < n_oracle < len(pool):
            raise ConfigError(f"paper.oracle_share = {p.oracle_share} of {len(pool)} pairs leaves an empty oracle or train split")
        heldout = load(p.data, p.eval_split)
        if p.max_eval_pairs:
            heldout = heldout.select(range(min(p.max_eval_pairs, len(heldout))))
        train = pool.select(range(n_oracle, len(pool))) if world == "id" else load(p.ood_data, p.ood_split)
        splits = DatasetDict({"oracle": pool.select(range(n_oracle)), "train": train, "eval": heldout})
        with staged_dir(path) as tmp:
            splits.save_to_disk(str(tmp))
        return path

    def eval_prompts(self, world: str = "id") -> list[str]:
        """The first benchmark's instructions (the paper tier evaluates on benchmarks, not on held-out pairs)."""
        from sepo.benchmarks import load_prompt_set

        if not self.paper.benchmarks:
            raise ConfigError("paper.benchmarks is empty: no prompts to evaluate on")
        return [r["instruction"] for r in load_prompt_set(self.paper.benchmarks[0])]

    # --- what the stages get at this tier ---------------------------------------------------
    def stage_values(self, stage: str) -> dict[str, Any]:
        """Training settings of the paper tier added to an oracle or policy stage's config."""
        p = self.paper
        return dict(chat_template=self.chat_template, drop_prompt_longer_than=p.drop_prompt_longer_than,
                    drop_response_shorter_than=p.drop_response_shorter_than,
                    gradient_accumulation_steps=p.gradient_accumulation_steps, bf16=p.bf16,
                    gradient_checkpointing=p.gradient_checkpointing, lr_scheduler_type=p.lr_scheduler_type)

    def eval_values(self, benchmark: str = "") -> dict[str, Any]:
        """Settings of an evaluation judged by ``benchmark`` at this tier: chat prompts, the LLM judge's
        server, and the benchmark's fixed baseline (and AlpacaEval's length-control file) when configured."""
        from sepo.pipeline import resolve

        p = self.paper
        values = dict(chat_template=True, judge_model=p.judge_model, base_url=p.base_url, api_key_env=p.api_key_env,
                      temperature=p.temperature, device=p.device, bf16=p.bf16, bootstrap_rounds=p.bootstrap_rounds)
        if benchmark in p.baseline_outputs:
            values["baseline_outputs"] = str(resolve(p.baseline_outputs[benchmark]))
            if benchmark == "alpaca_eval" and p.lc_df_gamed_path:
                values["lc_df_gamed_path"] = str(resolve(p.lc_df_gamed_path))
        return values

    def runner(self, stage: str, run):
        """``run`` itself, or, with an accelerate config, a function that runs the stage as
        ``accelerate launch -m sepo <stage>`` on the same config and reads the metrics it wrote."""
        if not self.paper.accelerate_config:
            return run
        from sepo.pipeline import ROOT, resolve

        def launch(config) -> dict:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                config_file = Path(tmp) / f"{stage}.yaml"
                config.to_yaml(config_file)
                command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(resolve(self.paper.accelerate_config)), "--num_processes", str(self.paper.num_processes),
                           "-m", "sepo", stage, "--config", str(config_file)]
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
                done = subprocess.run(command, cwd=str(ROOT), env=env, capture_output=True, text=True)
            metrics_file = Path(config.output_dir) / "metrics.json"
            if done.returncode != 0 or not metrics_file.exists():
                raise RuntimeError(f"accelerate launch of the {stage} stage failed (exit {done.returncode}):\n"
                                   f"{done.stderr[-4000:]}")
            return json.loads(metrics_file.read_text())

        return launch


# --------------------------------------------------------------------------------------------
# Evaluation at the paper tier: every configured benchmark, summarised into a table row
# --------------------------------------------------------------------------------------------
def evaluate_benchmarks(pipe, model_dir: str, reference_dir: str, seed: int, *, generator: str = "policy",
                        reference_generator: str = "sft") -> dict[str, Any]:
    """Sample ``model_dir`` and its SFT model on each benchmark of ``paper.benchmarks``, judge with the
    benchmark's LLM judge (cached evaluate runs), and return the table's numbers:

    ``win_rate`` / ``win_rate_se`` (against the SFT model, from the first pairwise benchmark), ``kl`` / ``kl_se``
    (on the first benchmark's prompts), ``reward`` (NaN: no gold reward at this tier) and one column per
    benchmark score: ``alpaca_eval_wr`` / ``alpaca_eval_lc`` (against the baseline, when given),
    ``mt_bench`` / ``mt_bench_turn_1`` / ``mt_bench_turn_2``, ``arena_hard`` (against the baseline if given,
    else the SFT model) with its bootstrap interval. ``eval_run`` names the runs (';'-separated)."""
    from sepo.cache import cached_run
    from sepo.evaluate import EvalConfig, run_evaluate
    from sepo.pipeline import relative

    c, world = pipe.config, pipe.world
    p = world.paper
    if not p.benchmarks:
        raise ConfigError("paper.benchmarks is empty: name at least one of " + ", ".join(BENCHMARKS))
    nan = float("nan")
    row: dict[str, Any] = {"win_rate": nan, "win_rate_se": nan, "reward": nan, "reward_se": nan, "sft_reward": nan,
                           "kl": nan, "kl_se": nan, "sample_tokens": nan, "cutoff_share": nan}
    runs = []
    for i, benchmark in enumerate(p.benchmarks):
        values = dict(
            model_dir=model_dir, reference_dir=reference_dir, prompt_set=benchmark, max_prompts=c.eval_prompts,
            num_samples=c.eval_samples, max_new_tokens=c.max_new_tokens, seed=seed, batch_size=c.eval_batch_size,
            judge=benchmark, generator=generator, reference_generator=reference_generator, estimate_kl=i == 0,
            **world.eval_values(benchmark),
        )
        values["reference_outputs"] = pipe.reference_outputs(EvalConfig.from_dict(values, out_dir="-"))
        run_dir, metrics = cached_run("evaluate", EvalConfig, values, run_evaluate, pipe.cache, out_field="out_dir")
        runs.append(relative(run_dir))
        if "vs_reference" in metrics and row["win_rate"] != row["win_rate"]:  # NaN: the first pairwise benchmark
            row["win_rate"] = metrics["vs_reference"]["win_rate"] / 100.0
            row["win_rate_se"] = metrics["vs_reference"]["standard_error"] / 100.0
        if "kl" in metrics:
            row["kl"], row["kl_se"] = metrics["kl"]["kl"], metrics["kl"]["kl_stderr"]
        if "lengths_policy" in metrics and row["sample_tokens"] != row["sample_tokens"]:  # the first that has them
            row["sample_tokens"] = metrics["lengths_policy"]["mean_tokens"]
            row["cutoff_share"] = metrics["lengths_policy"]["cutoff_share"]
        if benchmark == "alpaca_eval":
            row["alpaca_eval_wr_vs_sft"] = metrics["vs_reference"]["win_rate"] / 100.0
            if "vs_baseline" in metrics:
                row["alpaca_eval_wr"] = metrics["vs_baseline"]["win_rate"] / 100.0
            if "vs_baseline_length_controlled" in metrics:
                row["alpaca_eval_lc"] = metrics["vs_baseline_length_controlled"]["length_controlled_winrate"] / 100.0
        elif benchmark == "mt_bench":
            scores = metrics["mt_bench_policy"]
            row.update(mt_bench=scores["overall"]["mean"], mt_bench_turn_1=scores["turn_1"]["mean"],
                       mt_bench_turn_2=scores["turn_2"]["mean"], mt_bench_sft=metrics["mt_bench_reference"]["overall"]["mean"])
        elif benchmark == "arena_hard":
            score = metrics["arena_hard_vs_baseline" if "arena_hard_vs_baseline" in metrics else "arena_hard_vs_reference"]
            row.update(arena_hard=score["score"] / 100.0, arena_hard_low=score["lower"] / 100.0,
                       arena_hard_high=score["upper"] / 100.0, arena_hard_baseline=score["baseline"])
    row["eval_run"] = ";".join(runs)
    return row
