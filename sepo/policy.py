"""Policy stage: train a model with any registry loss (SePO, DPO, IPO, SimPO, RRHF, Selective-DPO, ConfPO).

* **SePO** reads the oracle's saved token scores, selects per response the top ``k_w`` tokens of
  the chosen and the bottom ``k_l`` of the rejected answer (the ``topk`` selector of
  :data:`sepo.selectors.SELECTORS`, or any other registered one, with ``selection_kwargs``),
  and trains reference-free on those tokens only. Its data is an oracle run's ``scored/`` dataset,
  whose tokenizer the policy's must equal (weak-to-strong: a larger policy, the same tokenizer).
* **Reference-free losses** (SePO, SimPO, RRHF, ConfPO) load **no reference model**.
* **DPO / IPO / Selective-DPO** load ``reference_path``; for Selective-DPO it may be a different,
  stronger model than ``model_path`` (it must share the tokenizer). Selective-DPO and ConfPO select
  tokens online, inside the loss.

With ``head_on_used_positions`` the LM head runs only at the tokens the loss reads (see
:func:`sepo.trainer.used_token_logps`). Checkpoints every ``save_steps`` steps (under
``checkpoints/``) give the intermediate policies of a reward-vs-KL frontier.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from datasets import Dataset

from sepo.config import help_field
from sepo.data import REQUIRED_COLUMNS, check_same_tokenizer, row_places
from sepo.errors import ConfigError, DataError, TokenizerMismatchError
from sepo.losses import LOSSES, get_loss
from sepo.oracle import scored_data_record
from sepo.paper import prepare_preferences
from sepo.scoring import SCORE_COLUMNS
from sepo.selectors import SELECTORS, get_selector, select_from_scores
from sepo.trainer import (
    PreferenceCollator,
    PreferenceTrainer,
    SnapshotCallback,
    TrainingStageConfig,
    data_source,
    is_wall_clock,
    load_causal_lm,
    load_preferences,
    load_tokenizer,
    require_columns,
    resolve_checkpoint,
    save_final_model,
    train_log_summary,
    training_arguments,
    write_records,
)
from sepo.utils import add_column, column, seed_everything

TOKENIZED_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
SELECTION_COLUMNS = ("chosen_selected", "rejected_selected")


@dataclasses.dataclass
class PolicyConfig(TrainingStageConfig):
    """Parameters of the policy stage (also the parameter cell of its notebook)."""

    model_path: str = help_field("", help="initial policy weights (SFT model) directory or hub id")
    loss: str = help_field("sepo", help=f"registry loss: one of {sorted(LOSSES)}")
    loss_kwargs: dict = help_field({}, help="the loss's hyper-parameters (checked against the registry), e.g. {gamma: 1.0}")
    reference_path: str = help_field("", help="reference model for losses that need one (dpo, ipo, selective_dpo); must be '' otherwise")
    data_path: str = help_field("", help="an oracle run directory / its scored/ dataset (needed by sepo), or any preference data")
    split: str = help_field("", help="split of data_path when it holds several ('' for a single dataset)")
    selector: str = help_field("topk", help=f"offline token selector, for losses that need one: one of {sorted(SELECTORS)}")
    selection_kwargs: dict = help_field({}, help="the selector's hyper-parameters (checked against the registry), e.g. {k_w: 0.3, k_l: 0.3}")
    selection_seed: int = help_field(0, help="seed of selectors that draw at random (the 'random' control)")
    max_pairs: int = help_field(0, help="train on the first this many pairs (0: all)")
    head_on_used_positions: bool = help_field(True, help="run the LM head only at the tokens the loss reads")
    snapshot_fractions: tuple[float, ...] = help_field((), help="save the weights when these fractions of the optimizer "
                                                             "steps are done (snapshots/step-N: points of a reward-vs-KL frontier)")

    def validate(self) -> None:
        super().validate()
        self._require(bool(self.model_path), "model_path", "an initial model path is required")
        self._require(bool(self.data_path), "data_path", "a preference data path is required")
        self._require(self.loss in LOSSES, "loss", f"registered losses: {sorted(LOSSES)}")
        self._require(isinstance(self.loss_kwargs, dict), "loss_kwargs", "must be a mapping of hyper-parameters")
        spec = get_loss(self.loss)
        unknown = sorted(set(self.loss_kwargs) - set(spec.hyperparameters))
        self._require(not unknown, "loss_kwargs", f"{unknown} not taken by loss {self.loss!r} (it takes {sorted(spec.hyperparameters)})")
        self._require(not spec.needs_reference or bool(self.reference_path), "reference_path",
                      f"loss {self.loss!r} needs a reference model")
        self._require(spec.needs_reference or not self.reference_path, "reference_path",
                      f"loss {self.loss!r} is reference-free and would not use it; leave it empty")
        self._require(self.selector in SELECTORS, "selector", f"registered selectors: {sorted(SELECTORS)}")
        self._require(isinstance(self.selection_kwargs, dict), "selection_kwargs", "must be a mapping of hyper-parameters")
        try:
            get_selector(self.selector).check(self.selection_kwargs)
        except ConfigError as err:
            raise ConfigError(f"{type(self).__name__}.selection_kwargs = {self.selection_kwargs!r}: {err}") from None
        self._require(self.max_pairs >= 0, "max_pairs", "must be >= 0")
        self._require(all(0 < f < 1 for f in self.snapshot_fractions), "snapshot_fractions", "fractions must be in (0, 1)")

    @property
    def uses_reference(self) -> bool:
        return get_loss(self.loss).needs_reference


def scored_tokenizer_dir(data_path: str) -> Path | None:
    """The tokenizer an oracle run saved beside its scores (``scored/tokenizer``), if any."""
    path = Path(data_path)
    for candidate in (path / "scored" / "tokenizer", path / "tokenizer"):
        if (candidate / "tokenizer_config.json").exists():
            return candidate
    return None


def load_policy_data(config: PolicyConfig, tokenizer) -> tuple[Dataset, dict[str, Any]]:
    """Tokenised training pairs (with selections for SePO) and data metrics; every check before training."""
    path = Path(config.data_path)
    data_path = str(path / "scored") if (path / "scored").is_dir() else config.data_path
    dataset = load_preferences(data_path, config.split)
    if config.max_pairs:
        dataset = dataset.select(range(min(config.max_pairs, len(dataset))))
    metrics: dict[str, Any] = {}
    saved = scored_tokenizer_dir(config.data_path)
    if saved is not None:
        from transformers import AutoTokenizer

        check_same_tokenizer(tokenizer, AutoTokenizer.from_pretrained(str(saved)), "policy and oracle")
    if all(c in dataset.column_names for c in TOKENIZED_COLUMNS):
        if saved is None:
            raise TokenizerMismatchError(
                f"data_path = {config.data_path!r} holds token ids but no tokenizer/ beside them; "
                "cannot check they come from the policy's tokenizer"
            )
        record = scored_data_record(data_path)  # an oracle run's pairs: what tokenising them dropped or cut
        source = record["source"]
        metrics.update({f"data/train/{k}": v for k, v in record["report"].items()})
    else:
        source = data_source(data_path, config.split)
        require_columns(dataset, REQUIRED_COLUMNS, f"data_path = {config.data_path!r}")
        dataset, report = prepare_preferences(
            dataset, tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length,
            drop_prompt_longer_than=config.drop_prompt_longer_than,
            drop_response_shorter_than=config.drop_response_shorter_than, source=source,
        )
        metrics.update({f"data/train/{k}": v for k, v in report.to_dict().items()})
    if get_loss(config.loss).needs_selection:
        require_columns(dataset, SCORE_COLUMNS, f"data_path = {config.data_path!r} (loss {config.loss!r} needs token scores: "
                                                "use an oracle run's scored data)")
        rows = column(dataset, "row") if "row" in dataset.column_names else None
        chosen, rejected = select_from_scores(
            column(dataset, "chosen_scores"), column(dataset, "rejected_scores"), config.selector,
            seed=config.selection_seed, rows=rows, **selector_inputs(config, dataset, tokenizer), **config.selection_kwargs,
        )
        for name, values, ids in (("chosen_selected", chosen, "chosen_ids"), ("rejected_selected", rejected, "rejected_ids")):
            for i, (mask, response) in enumerate(zip(values, column(dataset, ids))):
                if len(mask) != len(response):
                    raise DataError(f"{row_places(dataset.select([i]), source)[0]}: {len(mask)} scores for "
                                    f"{len(response)} tokens in {ids}")
            if name in dataset.column_names:
                dataset = dataset.remove_columns(name)
            dataset = add_column(dataset, name, values)
        metrics["selection/chosen_fraction"] = sum(map(sum, chosen)) / max(1, sum(map(len, chosen)))
        metrics["selection/rejected_fraction"] = sum(map(sum, rejected)) / max(1, sum(map(len, rejected)))
    keep = TOKENIZED_COLUMNS + (SELECTION_COLUMNS if get_loss(config.loss).needs_selection else ())
    dataset = dataset.remove_columns([c for c in dataset.column_names if c not in keep])
    metrics["data/train_pairs"] = len(dataset)
    return dataset, metrics


def selector_inputs(config: PolicyConfig, dataset: Dataset, tokenizer) -> dict[str, Any]:
    """What the configured selector reads beyond the scores: token ids and the EOS id, or gold credit."""
    needs, out = get_selector(config.selector).needs, {}
    if "ids" in needs:
        out.update(ids=(column(dataset, "chosen_ids"), column(dataset, "rejected_ids")), eos_id=tokenizer.eos_token_id)
    if "credit" in needs:
        from sepo.world.judge import credit_to_tokens

        columns = ("chosen_credit", "rejected_credit", "chosen_offsets", "rejected_offsets")
        require_columns(dataset, columns, f"data_path = {config.data_path!r} (selector {config.selector!r} needs gold "
                                          "per-token credit: a mini world's scored data)")
        out["credit"] = tuple([credit_to_tokens(c, o) for c, o in zip(column(dataset, f"{side}_credit"), column(dataset, f"{side}_offsets"))]
                              for side in ("chosen", "rejected"))
    return out


def check_token_ids_fit(dataset: Dataset, model, field: str) -> None:
    """Every token id must exist in the model's embedding (a cheap check that the tokenizers agree)."""
    size = model.get_input_embeddings().weight.shape[0]
    for name in TOKENIZED_COLUMNS:
        for i, ids in enumerate(column(dataset, name)):
            if ids and max(ids) >= size:
                raise TokenizerMismatchError(f"row {i}: {name} holds id {max(ids)} but {field} has {size} embeddings")


def run_policy(config: PolicyConfig, callbacks: tuple = ()) -> dict[str, Any]:
    """Train a policy with ``config.loss``, write the run directory; returns the metrics.

    ``callbacks`` are ``transformers.TrainerCallback`` objects added to the trainer. Paths, columns,
    tokenizers and hyper-parameters are all checked before training starts.
    """
    seed_everything(config.seed)
    checkpoint = resolve_checkpoint(config)
    spec = get_loss(config.loss)
    tokenizer = load_tokenizer(config.model_path, "model_path", config.chat_template)
    train_data, metrics = load_policy_data(config, tokenizer)
    reference = None
    if config.uses_reference:
        check_same_tokenizer(tokenizer, load_tokenizer(config.reference_path, "reference_path"), "policy and reference")
    args = training_arguments(config)  # before any weights load: under DeepSpeed ZeRO-3 it makes from_pretrained shard them
    model = load_causal_lm(config.model_path, "model_path", config.bf16)
    check_token_ids_fit(train_data, model, "model_path")
    if config.uses_reference:
        reference = load_causal_lm(config.reference_path, "reference_path", config.bf16)
    metrics["reference_loaded"] = reference is not None
    trainer = PreferenceTrainer(
        model=model,
        args=args,
        train_dataset=train_data,
        data_collator=PreferenceCollator(tokenizer.pad_token_id, ("selected",) if spec.needs_selection else ()),
        processing_class=tokenizer,
        callbacks=list(callbacks) + ([SnapshotCallback(config.snapshot_fractions, config.run_dir)]
                                     if config.snapshot_fractions else []),
        loss=spec,
        loss_kwargs=config.loss_kwargs,
        ref_model=reference,
        precompute_ref_log_probs=config.precompute_ref_log_probs,
        precompute_ref_batch_size=config.precompute_ref_batch_size,
        reference_cache_dir=config.reference_cache_dir,
        length_buckets=config.length_buckets,
        head_on_used_positions=config.head_on_used_positions,
    )
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=checkpoint)
    timing: dict[str, Any] = {k: v for k, v in output.metrics.items() if is_wall_clock(k)}
    metrics.update(train_log_summary(trainer.state.log_history))
    metrics["train/global_step"] = trainer.state.global_step
    save_final_model(trainer, config, tokenizer)
    if trainer.is_world_process_zero():
        timing["total_seconds"] = time.perf_counter() - started
        write_records(config, metrics, timing)
    return metrics
