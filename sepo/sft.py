"""SFT stage: supervised fine-tuning of a causal LM on (prompt, completion) text or on conversations.

Two of TRL's data formats are read:

* **prompt-completion**: columns ``prompt`` and ``completion`` (strings, or a message list for
  ``prompt``). Each example is tokenised exactly as preference pairs are (:func:`sepo.data.tokenize_prompt`
  + :func:`sepo.data.tokenize_response`): the prompt's ids (with BOS) followed by the completion's ids and
  EOS; the loss is on the **completion tokens and EOS only**.
* **conversational**: a column ``messages``, each a list of ``{"role", "content"}`` with roles ``system``,
  ``user``, ``assistant`` (UltraChat-200k's layout, ``HuggingFaceH4/ultrachat_200k`` split ``train_sft``).
  The conversation is rendered whole by the tokenizer's chat template (``chat_template`` for a tokenizer
  without one) and tokenised as chat prompts are (no special tokens added: the template writes them).
  The loss is on **every assistant turn only**: the text the template renders for an assistant message
  after the generation prompt, i.e. its content and the end-of-turn the template writes after it (EOS in
  Zephyr / TinyLlama-Chat templates). User and system turns, and the generation prompts, carry -100. An
  assistant turn's span is found by rendering the conversation up to it with and without that turn
  (``add_generation_prompt``), which needs a template that renders conversations incrementally.

In both, the labels of the other positions are -100, so the model learns to answer, and to stop, not
to reproduce prompts. (Every token of one batch counts equally: the loss is the mean over the batch's
labelled tokens.)

The model either continues from ``model_path`` or, in the mini world, starts from random weights
of a named size (:data:`sepo.world.models.MODEL_SIZES`) over the tokenizer at ``tokenizer_path``.

Run directory: ``model/`` (weights + tokenizer), ``config.yaml``, ``metrics.json``,
``timing.json``, and ``checkpoints/`` when ``save_steps`` is set.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from datasets import Dataset
from transformers import Trainer

from sepo.config import help_field
from sepo.data import row_places, tokenize_prompt, tokenize_response, where
from sepo.errors import ConfigError, DataError
from sepo.trainer import (
    TrainingStageConfig,
    data_source,
    is_wall_clock,
    load_causal_lm,
    load_preferences,
    load_tokenizer,
    require_columns,
    resolve_checkpoint,
    save_final_model,
    silence_library_progress,
    train_log_summary,
    training_arguments,
    write_records,
)
from sepo.utils import quiet, seed_everything

SFT_COLUMNS = ("prompt", "completion")
CONVERSATION_COLUMN = "messages"
ROLES = ("system", "user", "assistant")
IGNORE = -100  # label of positions left out of the loss


@dataclasses.dataclass
class SFTConfig(TrainingStageConfig):
    """Parameters of the SFT stage (also the parameter cell of its notebook)."""

    learning_rate: float = help_field(1e-3, help="peak learning rate")
    data_path: str = help_field("", help="prompt-completion or conversational ('messages') data: save_to_disk directory, "
                                       "json/jsonl/parquet file, or hub id")
    split: str = help_field("train", help="split of data_path to train on")
    model_path: str = help_field("", help="model to fine-tune (directory or hub id); '' to start from random weights of model_size")
    model_size: str = help_field("", help="named mini-world size (sepo.world.models.MODEL_SIZES) when starting from random weights")
    tokenizer_path: str = help_field("", help="tokenizer directory; '' for model_path's own tokenizer (required with model_size)")
    max_positions: int = help_field(256, help="position embeddings of a model built from model_size")

    def validate(self) -> None:
        super().validate()
        self._require(bool(self.data_path), "data_path", "a prompt-completion data path is required")
        self._require(bool(self.model_path) != bool(self.model_size), "model_path",
                      f"give exactly one of model_path and model_size (model_size = {self.model_size!r})")
        if self.model_size:
            from sepo.world.models import MODEL_SIZES

            self._require(self.model_size in MODEL_SIZES, "model_size", f"known sizes: {list(MODEL_SIZES)}")
            self._require(bool(self.tokenizer_path), "tokenizer_path", "a model built from model_size needs a tokenizer")
            self._require(self.max_positions >= self.max_length, "max_positions", f"must be >= max_length = {self.max_length}")


def tokenize_sft(dataset: Dataset, tokenizer, config: SFTConfig) -> tuple[Dataset, dict[str, int]]:
    """``input_ids`` and ``labels`` of each example, from prompt-completion or conversational data.

    A dataset with a ``completion`` column is prompt-completion data; otherwise one with a ``messages``
    column is conversational (:func:`tokenize_conversations`).
    """
    if "completion" not in dataset.column_names and CONVERSATION_COLUMN in dataset.column_names:
        return tokenize_conversations(dataset, tokenizer, config)
    return tokenize_prompt_completion(dataset, tokenizer, config)


def tokenize_prompt_completion(dataset: Dataset, tokenizer, config: SFTConfig) -> tuple[Dataset, dict[str, int]]:
    """``input_ids`` (prompt + completion + EOS) and ``labels`` (-100 on prompt positions) of each example.

    Filters and cuts follow the preference stages: drop (and count) examples whose prompt has more than
    ``drop_prompt_longer_than`` tokens or whose completion has fewer than ``drop_response_shorter_than``;
    then a sequence over ``max_length`` keeps the prompt's last ``max_prompt_length`` tokens and is cut
    at the end. An empty completion is an error naming the row.
    """
    source = data_source(config.data_path, config.split)
    require_columns(dataset, SFT_COLUMNS, f"{source} (prompt-completion data; conversations need a '{CONVERSATION_COLUMN}' column)")
    report = {"rows_in": len(dataset), "dropped_long_prompt": 0, "dropped_short_response": 0, "truncated": 0}
    input_ids, labels = [], []
    for index, row in enumerate(dataset):
        if not isinstance(row["completion"], str) or not row["completion"].strip():
            raise DataError(f"{where(row, index, source)}: field 'completion' must be a non-empty string")
        prompt_ids = tokenize_prompt(tokenizer, row["prompt"])
        if not prompt_ids:
            raise DataError(f"{where(row, index, source)}: field 'prompt' gives no token")
        completion_ids, _ = tokenize_response(tokenizer, row["completion"])
        if config.drop_prompt_longer_than and len(prompt_ids) > config.drop_prompt_longer_than:
            report["dropped_long_prompt"] += 1
            continue
        if config.drop_response_shorter_than and len(completion_ids) - 1 < config.drop_response_shorter_than:
            report["dropped_short_response"] += 1
            continue
        if len(prompt_ids) + len(completion_ids) > config.max_length:
            report["truncated"] += 1
            prompt_ids = prompt_ids[-config.max_prompt_length:]
            completion_ids = completion_ids[: config.max_length - len(prompt_ids)]
        input_ids.append(prompt_ids + completion_ids)
        labels.append([IGNORE] * len(prompt_ids) + completion_ids)
    report["rows_out"] = len(input_ids)
    if not input_ids:
        raise DataError(f"{source}: no example left after filtering: {report}")
    return Dataset.from_dict({"input_ids": input_ids, "labels": labels}), {f"data/{k}": v for k, v in report.items()}


def check_conversation(messages: Any, where: str) -> None:
    """Raise :class:`DataError` naming ``where`` and the field unless ``messages`` is a conversation with an assistant turn."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list of {{role, content}} messages, "
                        f"got {type(messages).__name__ if not isinstance(messages, list) else 'an empty list'}")
    for j, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(f"{where}: field 'messages[{j}]' must be a {{role, content}} message, got {type(message).__name__}")
        if message.get("role") not in ROLES:
            raise DataError(f"{where}: field 'messages[{j}].role' is {message.get('role')!r}; known roles: {list(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise DataError(f"{where}: field 'messages[{j}].content' must be a string, got {type(message.get('content')).__name__}")
    if messages[0]["role"] == "assistant":
        raise DataError(f"{where}: field 'messages[0].role' is 'assistant'; a conversation starts with a system or user message")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: field 'messages' has no assistant turn (nothing to learn from)")
    for j, message in enumerate(messages):
        if message["role"] == "assistant" and not message["content"].strip():
            raise DataError(f"{where}: field 'messages[{j}].content' is an empty assistant turn")


def assistant_spans(tokenizer, messages: list[dict], where: str = "conversation") -> tuple[str, list[tuple[int, int]]]:
    """The conversation rendered by the chat template, and the character span of each assistant turn in it.

    An assistant turn ``k`` spans from the end of ``render(messages[:k], add_generation_prompt=True)`` to the
    end of ``render(messages[:k + 1])`` without trailing whitespace: its content and the end of turn the
    template writes after it (e.g. EOS), not the line break before the next turn.
    """
    def render(part, generation_prompt):
        return tokenizer.apply_chat_template(part, tokenize=False, add_generation_prompt=generation_prompt)

    text = render(messages, False)
    spans = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = render(messages[:k], True), render(messages[: k + 1], False)
        if not (text.startswith(before) and text.startswith(through)):
            raise DataError(f"{where}: the chat template does not render the conversation incrementally (the text up to "
                            f"turn {k} is not a prefix of the whole), so the assistant tokens cannot be found")
        spans.append((len(before), len(through.rstrip())))  # the turn's content and end of turn, not the blank after it
    return text, spans


def tokenize_conversations(dataset: Dataset, tokenizer, config: SFTConfig) -> tuple[Dataset, dict[str, int]]:
    """``input_ids`` of each rendered conversation and ``labels`` on its assistant turns only (-100 elsewhere).

    Checks every row first (one error naming the source, row, line and field; nothing is tokenised before).
    Filters follow the other stages: drop (and count) a conversation whose text before its first assistant
    turn has more than ``drop_prompt_longer_than`` tokens, or whose assistant turns have fewer than
    ``drop_response_shorter_than`` tokens in all; a conversation over ``max_length`` is cut at the end (and
    dropped if no assistant token is left).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"{config.data_path} holds conversations ('messages'): the tokenizer has no chat template; "
                          f"set SFTConfig.chat_template (a .jinja file or the template itself)")
    conversations = dataset[CONVERSATION_COLUMN]
    places = row_places(dataset, data_source(config.data_path, config.split))
    for index, messages in enumerate(conversations):
        check_conversation(messages, places[index])
    report = {"rows_in": len(dataset), "dropped_long_prompt": 0, "dropped_short_response": 0, "truncated": 0,
              "dropped_truncated": 0, "assistant_tokens": 0}
    input_ids, labels = [], []
    for index, messages in enumerate(conversations):
        text, spans = assistant_spans(tokenizer, messages, places[index])
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        in_turn = [any(start <= a < end for start, end in spans) for a, _ in enc["offset_mapping"]]
        first = in_turn.index(True) if True in in_turn else len(ids)
        if config.drop_prompt_longer_than and first > config.drop_prompt_longer_than:
            report["dropped_long_prompt"] += 1
            continue
        if config.drop_response_shorter_than and sum(in_turn) < config.drop_response_shorter_than:
            report["dropped_short_response"] += 1
            continue
        if len(ids) > config.max_length:
            report["truncated"] += 1
            ids, in_turn = ids[: config.max_length], in_turn[: config.max_length]
            if not any(in_turn):
                report["dropped_truncated"] += 1
                continue
        input_ids.append(ids)
        labels.append([t if keep else IGNORE for t, keep in zip(ids, in_turn)])
        report["assistant_tokens"] += sum(in_turn)
    report["rows_out"] = len(input_ids)
    if not input_ids:
        raise DataError(f"no conversation left after filtering: {report}")
    return Dataset.from_dict({"input_ids": input_ids, "labels": labels}), {f"data/{k}": v for k, v in report.items()}


@dataclasses.dataclass
class SFTCollator:
    """Right-pads ``input_ids`` (with ``pad_id``) and ``labels`` (with -100) into (B, T) tensors."""

    pad_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[i, :n] = torch.as_tensor(f["input_ids"])
            labels[i, :n] = torch.as_tensor(f["labels"])
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class SFTTrainer(Trainer):
    """``transformers.Trainer`` whose steps can run a batch as ``length_buckets`` groups of rows of similar length.

    Each group is cut to its own longest row and gets the loss of its tokens summed over the whole batch's
    count (``num_items_in_batch``, as the trainer gives it): the groups' losses add up to the batch's loss, up
    to float rounding, with most of the padding gone. Without that count (a model whose loss takes no
    ``num_items_in_batch``) the batch runs whole.
    """

    def __init__(self, *args, length_buckets: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.length_buckets = length_buckets

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rows = inputs["input_ids"].shape[0]
        if self.length_buckets <= 1 or return_outputs or num_items_in_batch is None or rows < 2:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        lengths = inputs["attention_mask"].sum(1)  # right-padded rows (SFTCollator)
        total = 0.0
        for group in torch.argsort(lengths, stable=True).tensor_split(min(self.length_buckets, rows)):
            width = int(lengths[group].max())
            part = {name: value[group, :width] for name, value in inputs.items()}
            total = total + super().compute_loss(model, part, num_items_in_batch=num_items_in_batch)
        return total


def _initial_model(config: SFTConfig, tokenizer):
    if config.model_path:
        return load_causal_lm(config.model_path, "model_path", config.bf16)
    from sepo.world.models import make_model

    return make_model(config.model_size, tokenizer, config.seed, config.max_positions)


def run_sft(config: SFTConfig, callbacks: tuple = ()) -> dict[str, Any]:
    """Fine-tune, save ``model/`` with its tokenizer, write the run record; returns the metrics."""
    seed_everything(config.seed)
    silence_library_progress()
    checkpoint = resolve_checkpoint(config)
    tokenizer_source = config.tokenizer_path or config.model_path
    tokenizer = load_tokenizer(tokenizer_source, "tokenizer_path" if config.tokenizer_path else "model_path",
                               config.chat_template)
    data, metrics = tokenize_sft(load_preferences(config.data_path, config.split), tokenizer, config)
    model = _initial_model(config, tokenizer)
    trainer = SFTTrainer(model=model, args=training_arguments(config), train_dataset=data,
                         data_collator=SFTCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                         callbacks=list(callbacks), length_buckets=config.length_buckets)
    if quiet():
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=checkpoint)
    timing: dict[str, Any] = {k: v for k, v in output.metrics.items() if is_wall_clock(k)}
    timing["total_seconds"] = time.perf_counter() - started
    metrics.update(train_log_summary(trainer.state.log_history))
    metrics["train/global_step"] = trainer.state.global_step
    metrics["model/parameters"] = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    save_final_model(trainer, config, tokenizer)
    if trainer.is_world_process_zero():
        write_records(config, metrics, timing)
    return metrics
