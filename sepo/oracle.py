"""Oracle stage: DPO from the reference model on a fraction of the target data, then token scoring.

SePO's oracle is a small model DPO-trained from the reference ``pi_ref`` on a subset of the target
preference pairs. Together with ``pi_ref`` it defines the token reward
``r(y_t) = beta * (logp_oracle(y_t) - logp_ref(y_t))`` (:mod:`sepo.scoring`), which this stage
computes for every response token of the target pairs and saves, raw, with the dataset. Which
tokens a policy trains on is decided later from these scores (:mod:`sepo.policy`), so changing
``k`` never re-runs a model.

Where the pairs come from:

* ``oracle_split`` different from ``target_split`` (the mini world's ``oracle`` / ``train``): a
  seeded ``oracle_fraction`` of the oracle split trains the oracle; the whole target split is scored;
* the same split (the paper's ``train_prefs``): a seeded ``oracle_fraction`` of it trains the
  oracle and the *rest* is scored, so no pair is both trained on and selected from.

Run directory: ``model/`` (oracle weights + tokenizer), ``scored/`` (the scored target pairs, with
``scored/tokenizer/`` and ``scored/scoring.json`` naming what made the scores, ``scored/data.json`` where
the pairs came from and what tokenising them dropped or cut), ``config.yaml``,
``metrics.json`` and ``timing.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, load_from_disk

from sepo.config import help_field
from sepo.data import REQUIRED_COLUMNS, TokenizeReport
from sepo.errors import ConfigError, DataError
from sepo.losses import get_loss
from sepo.paper import prepare_preferences
from sepo.scoring import SCORE_COLUMNS, score_dataset, scores_cache_key
from sepo.trainer import (
    PreferenceCollator,
    PreferenceTrainer,
    TrainingStageConfig,
    is_wall_clock,
    load_causal_lm,
    data_source,
    load_preferences,
    load_tokenizer,
    require_columns,
    resolve_checkpoint,
    save_final_model,
    train_log_summary,
    training_arguments,
    write_records,
)
from sepo.utils import column, seed_everything, select_rows, staged_dir, write_json

SCORED = "scored"
DATA_RECORD = "data.json"  # in scored/: {"source": where the pairs came from, "report": TokenizeReport counts}


@dataclasses.dataclass
class OracleConfig(TrainingStageConfig):
    """Parameters of the oracle stage (also the parameter cell of its notebook)."""

    reference_path: str = help_field("", help="reference (SFT) model directory or hub id; the oracle starts from it")
    data_path: str = help_field("", help="preference data: save_to_disk directory, json/jsonl/parquet file, or hub id")
    oracle_split: str = help_field("oracle", help="split whose pairs train the oracle")
    target_split: str = help_field("train", help="split whose pairs are scored (the policy's training data)")
    eval_split: str = help_field("", help="held-out split for the oracle's reward accuracy ('' for none)")
    oracle_fraction: float = help_field(1.0, help="fraction of the oracle split used to train the oracle, in (0, 1]")
    max_eval_pairs: int = help_field(0, help="evaluate on at most this many held-out pairs (0: all)")
    beta: float = help_field(0.1, help="DPO beta of the oracle; also the scale of the token rewards")
    score_batch_size: int = help_field(16, help="pairs per forward pass when scoring tokens")
    score_cache_dir: str = help_field("", help="cache of token scores keyed by weights/beta/ids hashes ('' for none)")

    def validate(self) -> None:
        super().validate()
        self._require(bool(self.reference_path), "reference_path", "a reference model path is required")
        self._require(bool(self.data_path), "data_path", "a preference data path is required")
        self._require(bool(self.oracle_split), "oracle_split", "name the split that trains the oracle")
        self._require(bool(self.target_split), "target_split", "name the split to score")
        self._require(0.0 < self.oracle_fraction <= 1.0, "oracle_fraction", "must be in (0, 1]")
        self._require(self.oracle_split != self.target_split or self.oracle_fraction < 1.0, "oracle_fraction",
                      "must be < 1 when the oracle and target splits are the same (the rest is scored)")
        self._require(self.beta > 0 and math.isfinite(self.beta), "beta", "must be a positive number")
        self._require(self.score_batch_size >= 1, "score_batch_size", "must be >= 1")
        self._require(self.max_eval_pairs >= 0, "max_eval_pairs", "must be >= 0")


def oracle_and_target_rows(n_oracle_split: int, n_target_split: int, same_split: bool, fraction: float,
                           seed: int) -> tuple[list[int], list[int]]:
    """Row indices that train the oracle and row indices that are scored (seeded, disjoint on one split)."""
    order = torch.randperm(n_oracle_split, generator=torch.Generator().manual_seed(seed)).tolist()
    n_train = int(math.floor(fraction * n_oracle_split + 1e-9))
    train_rows = sorted(order[:n_train])
    target_rows = sorted(order[n_train:]) if same_split else list(range(n_target_split))
    return train_rows, target_rows


def _tokenize(config: OracleConfig, dataset: Dataset, tokenizer, what: str, source: str) -> tuple[Dataset, dict[str, int]]:
    require_columns(dataset, REQUIRED_COLUMNS, f"{source} ({what} pairs)")
    tokenized, report = prepare_preferences(
        dataset, tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length,
        drop_prompt_longer_than=config.drop_prompt_longer_than, drop_response_shorter_than=config.drop_response_shorter_than,
        source=source,
    )
    return tokenized, {f"data/{what}/{k}": v for k, v in report.to_dict().items()}


def _training_columns(dataset: Dataset) -> Dataset:
    keep = ("prompt_ids", "chosen_ids", "rejected_ids")
    return dataset.remove_columns([c for c in dataset.column_names if c not in keep])


def run_oracle(config: OracleConfig, callbacks: tuple = ()) -> dict[str, Any]:
    """Train the oracle, score the target pairs, write the run directory; returns the metrics.

    ``callbacks`` are ``transformers.TrainerCallback`` objects added to the trainer.
    Every input is checked (paths, columns, filters) before training starts.
    """
    seed_everything(config.seed)
    checkpoint = resolve_checkpoint(config)
    tokenizer = load_tokenizer(config.reference_path, "reference_path", config.chat_template)
    oracle_split = load_preferences(config.data_path, config.oracle_split)
    same_split = config.oracle_split == config.target_split
    target_split = oracle_split if same_split else load_preferences(config.data_path, config.target_split)
    train_rows, target_rows = oracle_and_target_rows(len(oracle_split), len(target_split), same_split,
                                                     config.oracle_fraction, config.seed)
    if not train_rows:
        raise ConfigError(f"oracle_fraction = {config.oracle_fraction} of {len(oracle_split)} pairs leaves no pair to train on")
    metrics: dict[str, Any] = {}
    target_source = data_source(config.data_path, config.target_split)
    train_data, report = _tokenize(config, select_rows(oracle_split, train_rows), tokenizer, "oracle",
                                   data_source(config.data_path, config.oracle_split))
    metrics.update(report)
    target_data, target_report = _tokenize(config, select_rows(target_split, target_rows), tokenizer, "target", target_source)
    metrics.update(target_report)
    eval_data = None
    if config.eval_split:
        held_out = load_preferences(config.data_path, config.eval_split)
        if config.max_eval_pairs:
            held_out = held_out.select(range(min(config.max_eval_pairs, len(held_out))))
        eval_data, report = _tokenize(config, held_out, tokenizer, "eval", data_source(config.data_path, config.eval_split))
        metrics.update(report)

    args = training_arguments(config, do_eval=eval_data is not None)  # first: under ZeRO-3 from_pretrained then shards
    model = load_causal_lm(config.reference_path, "reference_path", config.bf16)
    reference = load_causal_lm(config.reference_path, "reference_path", config.bf16)
    dpo = get_loss("dpo")
    trainer = PreferenceTrainer(
        model=model,
        args=args,
        train_dataset=_training_columns(train_data),
        eval_dataset=None if eval_data is None else _training_columns(eval_data),
        data_collator=PreferenceCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=list(callbacks),
        loss=dpo,
        loss_kwargs={"beta": config.beta},
        ref_model=reference,
        precompute_ref_log_probs=config.precompute_ref_log_probs,
        precompute_ref_batch_size=config.precompute_ref_batch_size,
        reference_cache_dir=config.reference_cache_dir,
        length_buckets=config.length_buckets,
    )
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=checkpoint)
    timing: dict[str, Any] = {k: v for k, v in output.metrics.items() if is_wall_clock(k)}
    metrics.update(train_log_summary(trainer.state.log_history))
    metrics["train/global_step"] = trainer.state.global_step
    metrics["data/oracle_pairs"] = len(train_data)
    if eval_data is not None:
        evaluated = trainer.evaluate()
        metrics.update({k.replace("eval_", "eval/", 1): v for k, v in evaluated.items() if not is_wall_clock(k) and k != "epoch"})
    oracle_dir = save_final_model(trainer, config, tokenizer)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        scored_at = time.perf_counter()
        data_record = {"source": target_source, "report": {k.removeprefix("data/target/"): v for k, v in target_report.items()}}
        metrics.update(score_target_pairs(config, target_data, tokenizer, oracle_dir, data_record))
        timing["scoring_seconds"] = time.perf_counter() - scored_at
        timing["total_seconds"] = time.perf_counter() - started
        write_records(config, metrics, timing)
    return metrics


@torch.no_grad()
def score_target_pairs(config: OracleConfig, target_data: Dataset, tokenizer, oracle_dir,
                       data_record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score every response token of the target pairs with the saved oracle; save them under ``scored/``.

    ``data_record`` (where the pairs came from and what tokenising them dropped or cut) is saved as
    ``scored/data.json``, so a policy trained on the scores reports the same counts.
    """
    oracle = load_causal_lm(str(oracle_dir), "oracle model", config.bf16)
    reference = load_causal_lm(config.reference_path, "reference_path", config.bf16)
    scored = score_dataset(
        target_data, oracle, reference, beta=config.beta, batch_size=config.score_batch_size,
        cache_dir=config.score_cache_dir or None, oracle_tokenizer=tokenizer, reference_tokenizer=tokenizer,
        reference_cache_dir=config.reference_cache_dir or None,
    )
    key = scores_cache_key(oracle, reference, target_data, config.beta)
    with staged_dir(config.run_dir / SCORED) as tmp:
        scored.save_to_disk(str(tmp))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        write_json(tmp / "scoring.json", {**key, "oracle_path": str(oracle_dir), "reference_path": config.reference_path})
        if data_record is not None:
            save_data_record(tmp, data_record["source"], data_record["report"])
    totals = [sum(s) for s in column(scored, "chosen_scores")], [sum(s) for s in column(scored, "rejected_scores")]
    return {
        "data/target_pairs_scored": len(scored),
        "scores/chosen_total_mean": sum(totals[0]) / len(scored),
        "scores/rejected_total_mean": sum(totals[1]) / len(scored),
        "scores/pair_accuracy": sum(w > l for w, l in zip(*totals)) / len(scored),
    }


def _scored_dir(run_or_scored_dir: str | Path) -> Path:
    path = Path(run_or_scored_dir)
    return path / SCORED if (path / SCORED).is_dir() else path


def load_scored(run_or_scored_dir: str) -> Dataset:
    """The scored dataset of an oracle run (its run directory or its ``scored/`` directory)."""
    path = _scored_dir(run_or_scored_dir)
    data = load_from_disk(str(path))
    require_columns(data, SCORE_COLUMNS, str(path))
    return data


def save_data_record(scored_dir: str | Path, source: str, report: TokenizeReport | dict[str, int]) -> None:
    """Write ``scored_dir/data.json``: where scored pairs came from and what tokenising them dropped or cut.

    Whatever saves token-id data for a policy (an oracle run, scores carried to another tokenizer)
    writes it, so the policy's ``metrics.json`` carries the counts (:func:`scored_data_record`).
    """
    counts = report.to_dict() if isinstance(report, TokenizeReport) else dict(report)
    write_json(Path(scored_dir) / DATA_RECORD, {"source": source, "report": counts})


def scored_data_record(run_or_scored_dir: str | Path) -> dict[str, Any]:
    """Where an oracle run's scored pairs came from and what tokenising them dropped or cut.

    ``{"source": ..., "report": {"rows_in": ..., "dropped_long_prompt": ..., ...}}`` from
    ``scored/data.json``; for a run that predates it, the report is read from the run's
    ``metrics.json`` (``data/target/*``). A :class:`DataError` when neither is there.
    """
    scored = _scored_dir(run_or_scored_dir)
    if (scored / DATA_RECORD).exists():
        return json.loads((scored / DATA_RECORD).read_text())
    metrics_file = scored.parent / "metrics.json"
    if metrics_file.exists():
        metrics = json.loads(metrics_file.read_text())
        report = {k.removeprefix("data/target/"): v for k, v in metrics.items() if k.startswith("data/target/")}
        if report:
            return {"source": str(scored), "report": report}
    raise DataError(f"{scored}: no {DATA_RECORD} and no oracle metrics.json beside it; "
                    "cannot tell what tokenising these pairs dropped or cut")
