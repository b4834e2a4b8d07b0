"""Building the mini world: tokenizers, SFT models of every size, preference pairs with gold labels.

Steps (all seeded by ``WorldConfig.seed``):

1. **Prompts.** For each world (``"id"``, ``"ood"``) distinct prompts are drawn without replacement:
   the first ``*_eval_prompts`` are held out for evaluation (never seen in SFT or in pairs), the next
   ``*_pairs`` get one preference pair each.
2. **SFT text.** ``sft_examples`` natural (prompt, response) examples from :mod:`sepo.world.text`,
   a share ``sft_ood_fraction`` of them from the OOD world (so the SFT models can answer OOD
   prompts too; "out of distribution" is relative to the *oracle's* training pairs, as in SePO's
   HH-RLHF experiment), prompts drawn with replacement from the non-held-out prompts.
3. **Tokenizers.** Byte-level BPE ``A`` (``vocab_size``) and ``B`` (``vocab_size_b``) on the SFT text.
4. **SFT.** One model per size in ``sizes`` with tokenizer A and per size in ``sizes_b`` with tokenizer
   B, from random weights, with :func:`sepo.sft.run_sft` (loss on response tokens and EOS only).
5. **Pairs.** For each pair prompt, two samples (temperature ``sample_temperature``) from the SFT
   model of ``policy_size`` with tokenizer A, the default policy (and reference) of the experiments.
   The chosen one is drawn by Bradley-Terry on the gold rewards:
   ``P(a preferred to b) = sigmoid((R(a) - R(b)) / bt_temperature)``, so pairs carry realistic
   label noise (a small temperature gives nearly clean labels).
6. **Gold labels.** ``chosen_gold`` / ``rejected_gold`` (gold rewards) and ``chosen_credit`` /
   ``rejected_credit`` (``[start, end, credit]`` of each word, leave-one-word-out; carry them onto
   any tokenizer with :func:`sepo.world.judge.credit_to_tokens`), computed once here.
7. **Splits.** Pairs are shuffled and cut into ``train`` / ``oracle`` / ``eval`` by ``split_fractions``.

The world is written under ``root/<config fingerprint>`` through :func:`sepo.utils.staged_dir`, so it
appears only when complete, and is reused whenever the same config is asked for again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict, Features, Sequence, Value, load_from_disk

from sepo.config import StageConfig, help_field
from sepo.errors import ConfigError, DataError
from sepo.utils import seed_everything, staged_dir, write_json, write_run_record
from sepo.world import text
from sepo.world.judge import GoldJudge
from sepo.world.models import MODEL_SIZES
from sepo.world.tokenizer import SPECIAL_TOKENS, round_trip_failures, train_tokenizer

SPLITS = ("train", "oracle", "eval")
TOKENIZER_NAMES = ("a", "b")
DONE = "world.json"  # written last: a world directory without it is not a world
PAIR_FEATURES = Features({
    "prompt": Value("string"), "chosen": Value("string"), "rejected": Value("string"),
    "chosen_gold": Value("float64"), "rejected_gold": Value("float64"),
    "chosen_credit": Sequence(Sequence(Value("float64"))), "rejected_credit": Sequence(Sequence(Value("float64"))),
})


@dataclasses.dataclass
class WorldConfig(StageConfig):
    """Everything that defines a mini world; its fingerprint names the cache directory."""

    seed: int = help_field(0, help="seed of text, tokenizers' corpus, model weights, sampling and splits")
    id_pairs: int = help_field(1800, help="preference pairs of the in-distribution world (one per distinct prompt)")
    ood_pairs: int = help_field(640, help="preference pairs of the out-of-distribution world")
    id_eval_prompts: int = help_field(512, help="held-out in-distribution prompts for evaluation")
    ood_eval_prompts: int = help_field(256, help="held-out out-of-distribution prompts for evaluation")
    split_fractions: tuple = help_field((0.6, 0.3, 0.1), help="fractions of the in-distribution pairs in the train / oracle / eval splits")
    ood_split_fractions: tuple = help_field((0.6, 0.3, 0.1), help="the same for the out-of-distribution pairs")
    sft_examples: int = help_field(16000, help="natural (prompt, response) examples the SFT models train on")
    sft_ood_fraction: float = help_field(0.25, help="share of the SFT examples drawn from the OOD world")
    min_sentences: int = help_field(1, help="fewest sentences of a natural response")
    max_sentences: int = help_field(4, help="most sentences of a natural response")
    vocab_size: int = help_field(1024, help="tokens of tokenizer A (the shared tokenizer of oracle and policy)")
    vocab_size_b: int = help_field(640, help="tokens of tokenizer B (a different vocabulary, for the cross-tokenizer question)")
    sizes: tuple = help_field(("small", "medium", "large"), help="model sizes trained by SFT with tokenizer A")
    sizes_b: tuple = help_field(("small",), help="model sizes trained by SFT with tokenizer B")
    policy_size: str = help_field("medium", help="size whose SFT model (tokenizer A) samples the preference pairs")
    sft_steps: int = help_field(260, help="SFT optimizer steps per model")
    sft_batch_size: int = help_field(32, help="SFT examples per step")
    sft_learning_rate: float = help_field(3e-3, help="peak SFT learning rate (linear decay, warm-up below)")
    sft_warmup_ratio: float = help_field(0.05, help="fraction of SFT steps warming the learning rate up")
    max_length: int = help_field(96, help="longest prompt + response in tokens (SFT cut; model positions)")
    max_new_tokens: int = help_field(64, help="longest sampled response in tokens")
    sample_temperature: float = help_field(1.0, help="temperature of the SFT samples that form pairs")
    sample_batch_size: int = help_field(256, help="prompts per generation batch (large batches amortise per-step overhead)")
    sft_length_buckets: int = help_field(1, help="SFT batches run as this many groups of rows of similar length "
                                                 "(less padding; the same loss up to float rounding)")
    threads: int = help_field(2, help="torch threads while the world is built (everything else waits for the world, so "
                                      "one thread would leave the other cores idle); a fixed count, so that the "
                                      "world's numbers do not depend on the machine's core count")
    bt_temperature: float = help_field(0.2, help="Bradley-Terry temperature of the gold preference (> 0)")
    judge_off_subject_penalty: float = help_field(0.5, help="GoldJudge.off_subject_penalty")
    judge_repeat_weight: float = help_field(2.0, help="GoldJudge.repeat_weight")
    judge_repeat_allowance: float = help_field(0.3, help="GoldJudge.repeat_allowance")
    judge_overrun_weight: float = help_field(0.5, help="GoldJudge.overrun_weight")
    judge_max_words: int = help_field(48, help="GoldJudge.max_words")
    judge_junk_weight: float = help_field(0.25, help="GoldJudge.junk_weight (per chunk that is not language)")

    def fractions(self, world: str) -> tuple:
        """The train / oracle / eval fractions of ``world``'s pairs."""
        return tuple(self.split_fractions if world == "id" else self.ood_split_fractions)

    def validate(self) -> None:
        for world, pairs, held_out in (("id", self.id_pairs, self.id_eval_prompts), ("ood", self.ood_pairs, self.ood_eval_prompts)):
            capacity = text.prompt_capacity(world)
            self._require(pairs >= len(SPLITS), f"{world}_pairs", f"need at least {len(SPLITS)} pairs (one per split)")
            self._require(held_out >= 1, f"{world}_eval_prompts", "need at least one held-out prompt")
            self._require(pairs + held_out <= capacity, f"{world}_pairs",
                          f"{pairs} pairs + {held_out} held-out prompts need distinct prompts, but world {world!r} has {capacity}")
        for name in ("split_fractions", "ood_split_fractions"):
            fractions = getattr(self, name)
            self._require(len(fractions) == len(SPLITS), name, f"give one fraction per split {SPLITS}")
            self._require(all(f > 0 for f in fractions) and math.isclose(sum(fractions), 1.0), name,
                          "fractions must be > 0 and sum to 1")
        for world, pairs in (("id", self.id_pairs), ("ood", self.ood_pairs)):
            fractions = self.fractions(world)
            self._require(min(split_sizes(pairs, fractions)) >= 1, f"{world}_pairs",
                          f"too few pairs to give every split {SPLITS} at least one with fractions {fractions}")
        self._require(self.sft_examples >= 1, "sft_examples", "must be >= 1")
        self._require(0.0 <= self.sft_ood_fraction <= 1.0, "sft_ood_fraction", "must be in [0, 1]")
        self._require(1 <= self.min_sentences <= self.max_sentences, "min_sentences",
                      f"need 1 <= min_sentences <= max_sentences = {self.max_sentences} (a response cannot be empty)")
        floor = 256 + len(SPECIAL_TOKENS)
        for name in ("vocab_size", "vocab_size_b"):
            self._require(getattr(self, name) > floor, name, f"must exceed {floor} (byte alphabet + special tokens)")
        self._require(self.vocab_size != self.vocab_size_b, "vocab_size_b", "must differ from vocab_size (a different vocabulary)")
        for name in ("sizes", "sizes_b"):
            unknown = [s for s in getattr(self, name) if s not in MODEL_SIZES]
            self._require(not unknown, name, f"unknown size(s) {unknown}; known: {list(MODEL_SIZES)}")
            self._require(len(set(getattr(self, name))) == len(getattr(self, name)), name, "sizes must be distinct")
        self._require(len(self.sizes) >= 1, "sizes", "at least one size")
        self._require(self.policy_size in self.sizes, "policy_size", f"must be one of sizes = {list(self.sizes)}")
        for name in ("sft_steps", "sft_batch_size", "sample_batch_size", "sft_length_buckets", "threads"):
            self._require(getattr(self, name) >= 1, name, "must be >= 1")
        self._require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1 (a response cannot have zero length)")
        self._require(self.sft_learning_rate > 0, "sft_learning_rate", "must be > 0")
        self._require(0.0 <= self.sft_warmup_ratio < 1.0, "sft_warmup_ratio", "must be in [0, 1)")
        self._require(self.max_length > self.max_new_tokens, "max_length", f"must exceed max_new_tokens = {self.max_new_tokens}")
        self._require(self.sample_temperature > 0, "sample_temperature", "must be > 0 (pairs need two different samples)")
        self._require(self.bt_temperature > 0 and math.isfinite(self.bt_temperature), "bt_temperature", "must be a positive number")
        self.make_judge()  # the judge's own checks
        self.response_style()

    def make_judge(self) -> GoldJudge:
        return GoldJudge(off_subject_penalty=self.judge_off_subject_penalty, repeat_weight=self.judge_repeat_weight,
                         repeat_allowance=self.judge_repeat_allowance, overrun_weight=self.judge_overrun_weight,
                         max_words=self.judge_max_words, junk_weight=self.judge_junk_weight)

    def response_style(self) -> text.ResponseStyle:
        return text.ResponseStyle(min_sentences=self.min_sentences, max_sentences=self.max_sentences)

    def pairs(self, world: str) -> int:
        return {"id": self.id_pairs, "ood": self.ood_pairs}[world]

    def held_out(self, world: str) -> int:
        return {"id": self.id_eval_prompts, "ood": self.ood_eval_prompts}[world]


def smoke_world_config(**overrides: Any) -> WorldConfig:
    """A world that builds in about 50 s on 2 cores (25 s without the large model), for tests and smoke runs.

    Its small and medium SFT models write recognisable reviews (pairs agree with gold ~85% of the time);
    the large one is only a stand-in at this step count.
    """
    values = dict(id_pairs=480, ood_pairs=48, id_eval_prompts=32, ood_eval_prompts=8, sft_examples=2400,
                  vocab_size=512, vocab_size_b=400, sft_steps=150, sft_batch_size=16, sft_learning_rate=5e-3,
                  max_new_tokens=48, max_length=80)
    values.update(overrides)
    return WorldConfig.from_dict(values)


def split_sizes(n: int, fractions) -> list[int]:
    """Pair counts of the splits: the first splits get ``round(f * n)``, the last one the rest."""
    sizes = [int(round(f * n)) for f in fractions[:-1]]
    return sizes + [n - sum(sizes)]


def bradley_terry_choice(reward_a: float, reward_b: float, temperature: float, u: float) -> bool:
    """True when ``a`` is chosen: ``u`` (uniform in [0, 1)) below ``sigmoid((R(a) - R(b)) / temperature)``."""
    return u < 1.0 / (1.0 + math.exp(-(reward_a - reward_b) / temperature))


# --------------------------------------------------------------------------------------------
# The built world
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class World:
    """A built world on disk: paths of its tokenizers and SFT models, its pairs and held-out prompts."""

    root: Path
    config: WorldConfig

    @property
    def tokenizer_path(self) -> Path:
        return self.root / "tokenizer_a"

    @property
    def tokenizer_b_path(self) -> Path:
        return self.root / "tokenizer_b"

    def sft_run_dir(self, size: str, tokenizer: str = "a") -> Path:
        """The SFT run directory (``config.yaml``, ``metrics.json``, ``model/``) of a size and tokenizer."""
        sizes = self.config.sizes if tokenizer == "a" else self.config.sizes_b if tokenizer == "b" else None
        if sizes is None:
            raise ConfigError(f"tokenizer = {tokenizer!r}: use one of {TOKENIZER_NAMES}")
        if size not in sizes:
            raise ConfigError(f"no SFT model of size {size!r} with tokenizer {tokenizer!r} in this world; built sizes: {list(sizes)}")
        return self.root / f"sft_{tokenizer}" / size

    def sft_path(self, size: str, tokenizer: str = "a") -> Path:
        """Directory of the SFT model of ``size`` (weights + its tokenizer), loadable with ``from_pretrained``."""
        return self.sft_run_dir(size, tokenizer) / "model"

    def preferences_path(self, world: str = "id") -> Path:
        text.vocabulary(world)  # names the known worlds if ``world`` is unknown
        return self.root / f"preferences_{world}"

    def preferences(self, world: str = "id") -> DatasetDict:
        """The world's pairs: splits ``train``, ``oracle``, ``eval`` in TRL format plus gold rewards and credit."""
        return load_from_disk(str(self.preferences_path(world)))

    def eval_prompts(self, world: str = "id") -> list[str]:
        """Held-out prompts (in neither SFT text nor pairs) for evaluating policies."""
        text.vocabulary(world)
        return json.loads((self.root / "eval_prompts.json").read_text())[world]

    @cached_property
    def judge(self) -> GoldJudge:
        return self.config.make_judge()

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads((self.root / "metrics.json").read_text())


def world_dir(config: WorldConfig, root: str | Path = "cache/world") -> Path:
    """``root/<key>``: the key hashes the config and the source of the code that builds the world."""
    from sepo.cache import cache_key, code_fingerprint

    return Path(root) / cache_key(config.fingerprint(), code_fingerprint("world"))


def world_exists(config: WorldConfig, root: str | Path = "cache/world") -> bool:
    return (world_dir(config, root) / DONE).exists()


def build_world(config: WorldConfig, root: str | Path = "cache/world") -> World:
    """The world of ``config``: loaded from ``root/<key>`` if built before, else built there (see :func:`world_dir`)."""
    final = world_dir(config, root)
    if (final / DONE).exists():
        return World(final, config)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    with staged_dir(final) as tmp:
        try:
            torch.set_num_threads(config.threads)
            metrics = _build(config, tmp)
        finally:
            torch.set_num_threads(threads)
        metrics["timing/total_seconds"] = time.perf_counter() - started
        write_run_record(tmp, config, metrics)
        write_json(tmp / DONE, {"fingerprint": config.fingerprint(), "key": final.name})
    return World(final, config)


# --------------------------------------------------------------------------------------------
# Building steps
# --------------------------------------------------------------------------------------------
def _draw_prompts(config: WorldConfig, rng: random.Random) -> dict[str, dict[str, list[str]]]:
    """Per world: ``eval`` (held out), ``pairs`` and ``sft_pool`` (every prompt not held out)."""
    out = {}
    for world in text.WORLD_NAMES:
        n_eval, n_pairs = config.held_out(world), config.pairs(world)
        drawn = text.sample_prompts(world, n_eval + n_pairs, rng)
        held_out = set(drawn[:n_eval])
        out[world] = {"eval": drawn[:n_eval], "pairs": drawn[n_eval:],
                      "sft_pool": [p for p in text.all_prompts(world) if p not in held_out]}
    return out


def _sft_corpus(config: WorldConfig, prompts: dict, rng: random.Random) -> list[tuple[str, str]]:
    n_ood = int(round(config.sft_ood_fraction * config.sft_examples))
    style = config.response_style()
    corpus = (text.sample_corpus("id", config.sft_examples - n_ood, rng, prompts["id"]["sft_pool"], style)
              + text.sample_corpus("ood", n_ood, rng, prompts["ood"]["sft_pool"], style))
    rng.shuffle(corpus)
    return corpus


def _train_sft(config: WorldConfig, tokenizer_dir: Path, data_dir: Path, size: str, out: Path) -> dict[str, Any]:
    from sepo.sft import SFTConfig, run_sft

    sft_config = SFTConfig(
        output_dir=str(out), data_path=str(data_dir), split="train", model_size=size, tokenizer_path=str(tokenizer_dir),
        seed=config.seed, max_steps=config.sft_steps, per_device_batch_size=config.sft_batch_size,
        learning_rate=config.sft_learning_rate, warmup_ratio=config.sft_warmup_ratio,
        max_length=config.max_length, max_prompt_length=config.max_length // 2, max_positions=config.max_length,
        logging_steps=max(1, config.sft_steps // 10), length_buckets=config.sft_length_buckets,
    )
    return run_sft(sft_config)


def _sample_pairs(config: WorldConfig, model, tokenizer, prompts: list[str], seed: int) -> list[tuple[str, str]]:
    """Two non-blank samples per prompt (prompts with a blank sample are redrawn with the next seed)."""
    from sepo.generation import sample_responses

    samples: list[list[str] | None] = [None] * len(prompts)
    todo = list(range(len(prompts)))
    for attempt in range(5):
        drawn = sample_responses(model, tokenizer, [prompts[i] for i in todo], num_samples=2,
                                 max_new_tokens=config.max_new_tokens, temperature=config.sample_temperature,
                                 seed=seed + attempt, batch_size=config.sample_batch_size, min_new_tokens=1)
        for i, pair in zip(todo, drawn):
            if all(s.strip() for s in pair):
                samples[i] = pair
        todo = [i for i in todo if samples[i] is None]
        if not todo:
            return [tuple(s) for s in samples]
    raise DataError(f"{len(todo)} prompts still have a blank sample after 5 draws (first: {prompts[todo[0]]!r}); "
                    "the SFT model does not answer; train it longer")


def _label_pairs(config: WorldConfig, judge: GoldJudge, prompts: list[str], samples: list[tuple[str, str]],
                 rng: np.random.Generator) -> dict[str, list]:
    """Gold rewards and credits of both samples; the chosen one drawn by Bradley-Terry."""
    columns: dict[str, list] = {name: [] for name in PAIR_FEATURES}
    u = rng.random(len(prompts))
    for i, (prompt, (a, b)) in enumerate(zip(prompts, samples)):
        reward_a, reward_b = judge.reward(prompt, a), judge.reward(prompt, b)
        if not bradley_terry_choice(reward_a, reward_b, config.bt_temperature, float(u[i])):
            a, b, reward_a, reward_b = b, a, reward_b, reward_a
        columns["prompt"].append(prompt)
        columns["chosen"].append(a)
        columns["rejected"].append(b)
        columns["chosen_gold"].append(reward_a)
        columns["rejected_gold"].append(reward_b)
        columns["chosen_credit"].append([[s, e, c] for s, e, c in judge.word_credit(prompt, a)])
        columns["rejected_credit"].append([[s, e, c] for s, e, c in judge.word_credit(prompt, b)])
    return columns


def _split(columns: dict[str, list], fractions, rng: np.random.Generator) -> DatasetDict:
    data = Dataset.from_dict(columns, features=PAIR_FEATURES)
    order = rng.permutation(len(data)).tolist()
    out, start = {}, 0
    for name, size in zip(SPLITS, split_sizes(len(data), fractions)):
        out[name] = data.select(sorted(order[start : start + size]))
        start += size
    return DatasetDict(out)


def _pair_stats(world: str, data: DatasetDict) -> dict[str, float]:
    rows = [r for split in SPLITS for r in data[split]]
    gold = np.array([[r["chosen_gold"], r["rejected_gold"]] for r in rows])
    credit = np.array([abs(c[2]) for r in rows for side in ("chosen_credit", "rejected_credit") for c in r[side]])
    top = np.sort(credit)[::-1]
    return {
        f"pairs/{world}/n": len(rows),
        f"pairs/{world}/sample_gold_mean": float(gold.mean()),
        f"pairs/{world}/sample_gold_std": float(gold.std()),
        f"pairs/{world}/chosen_gold_mean": float(gold[:, 0].mean()),
        f"pairs/{world}/rejected_gold_mean": float(gold[:, 1].mean()),
        f"pairs/{world}/label_agrees_with_gold": float((gold[:, 0] > gold[:, 1]).mean()),
        f"pairs/{world}/tied_gold": float((gold[:, 0] == gold[:, 1]).mean()),
        f"pairs/{world}/words_with_zero_credit": float((credit == 0).mean()),
        f"pairs/{world}/credit_share_of_top_10pct_words": float(top[: max(1, len(top) // 10)].sum() / max(top.sum(), 1e-12)),
        **{f"pairs/{world}/{split}": len(data[split]) for split in SPLITS},
    }


def _build(config: WorldConfig, out: Path) -> dict[str, Any]:
    """Write every part of the world into ``out``; returns the build metrics."""
    from datasets import disable_progress_bars
    from transformers import AutoTokenizer

    from sepo.trainer import load_causal_lm

    disable_progress_bars()
    seed_everything(config.seed)
    rng = random.Random(config.seed)
    metrics: dict[str, Any] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        metrics[f"timing/{name}_seconds"] = time.perf_counter() - clock
        clock = time.perf_counter()

    prompts = _draw_prompts(config, rng)
    write_json(out / "eval_prompts.json", {world: prompts[world]["eval"] for world in text.WORLD_NAMES})
    corpus = _sft_corpus(config, prompts, rng)
    data_dir = out / "sft_data"
    DatasetDict({"train": Dataset.from_dict({"prompt": [p for p, _ in corpus], "completion": [r for _, r in corpus]})}
                ).save_to_disk(str(data_dir))
    lap("text")

    texts = sorted(set(p for p, _ in corpus)) + [r for _, r in corpus]
    for name, vocab_size in (("a", config.vocab_size), ("b", config.vocab_size_b)):
        tokenizer = train_tokenizer(texts, vocab_size)
        failures = round_trip_failures(tokenizer, texts[:2000])
        if failures:
            raise DataError(f"tokenizer {name}: {len(failures)} texts do not round-trip, e.g. {failures[0]!r}")
        tokenizer.save_pretrained(str(out / f"tokenizer_{name}"))
        metrics[f"tokenizer/{name}/vocab_size"] = len(tokenizer)
    lap("tokenizers")

    for name, sizes in (("a", config.sizes), ("b", config.sizes_b)):
        for size in sizes:
            sft = _train_sft(config, out / f"tokenizer_{name}", data_dir, size, out / f"sft_{name}" / size)
            metrics.update({f"sft/{name}/{size}/{k}": v for k, v in sft.items() if k.startswith(("train/loss", "model/"))})
            lap(f"sft_{name}_{size}")

    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer_a"))
    model = load_causal_lm(str(out / "sft_a" / config.policy_size / "model"), "policy SFT model").eval()
    judge = config.make_judge()
    np_rng = np.random.default_rng(config.seed)
    for index, world in enumerate(text.WORLD_NAMES):
        pair_prompts = prompts[world]["pairs"]
        samples = _sample_pairs(config, model, tokenizer, pair_prompts, seed=config.seed + 1000 * index)
        lap(f"sampling_{world}")
        data = _split(_label_pairs(config, judge, pair_prompts, samples, np_rng), config.fractions(world), np_rng)
        data.save_to_disk(str(out / f"preferences_{world}"))
        metrics.update(_pair_stats(world, data))
        lap(f"labels_{world}")
    return metrics
