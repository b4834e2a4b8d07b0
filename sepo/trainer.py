"""The preference training loop: :class:`transformers.Trainer` with a registry loss.

Everything a training loop needs besides the loss (gradient accumulation, mixed precision,
checkpoints and resume, logging, DDP / FSDP / DeepSpeed through ``accelerate launch``) comes from
``transformers.Trainer``. :class:`PreferenceTrainer` only replaces ``compute_loss``:

1. a batch of B pairs arrives as one (2B, T) tensor, chosen rows first (:func:`sepo.data.collate_pairs`);
2. per-token log-probs of the policy, (2B, T-1), are computed at the positions the loss uses —
   the offline selection for losses that need one (SePO), every response token otherwise — and,
   with ``head_on_used_positions``, the LM head runs only there (:func:`used_token_logps`); with
   ``length_buckets`` the rows run in groups of similar length, with less padding
   (:func:`bucketed_token_logps`);
3. the same for the reference model, under ``torch.no_grad()``, when the loss needs one; with
   ``precompute_ref_log_probs`` (TRL's option of that name) they are computed once, before training,
   for every pair of the training and evaluation data (and, with ``reference_cache_dir``, kept for
   every later run with the same reference and pairs), so no step runs the reference;
4. the halves become a :class:`sepo.losses.PairLogps`, the registry loss gives per-pair losses,
   and their mean is the step's loss. ``LossOutput.metrics()`` are averaged over each logging window.

The module also holds what both training stages share: loading models, tokenizers and
preference data with errors that name the parameter, the ``TrainingArguments`` builder, and the
run-directory layout (``config.yaml``, ``metrics.json``, ``timing.json``, ``model/``, ``checkpoints/``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from datasets.exceptions import DatasetGenerationError
from datasets.utils import logging as datasets_logging
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.utils import logging as hf_logging

from sepo.config import StageConfig, help_field
from sepo.data import collate_pairs, with_source_rows
from sepo.errors import ConfigError, DataError
from sepo.logprobs import selective_log_softmax, token_logps
from sepo.losses import LossSpec, PairLogps
from sepo.utils import add_column, quiet, write_json, write_run_record

CHECKPOINTS = "checkpoints"
MODEL = "model"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


# --------------------------------------------------------------------------------------------
# Per-token log-probs at the positions a loss uses
# --------------------------------------------------------------------------------------------
def accepts_logits_to_keep(model) -> bool:
    """Whether a causal LM's ``forward`` can restrict its head to given positions."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def used_token_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor | None,
                     unwrapped=None) -> torch.Tensor:
    """Log-probs (2B, T-1) following :mod:`sepo.logprobs`' shift convention; 0 outside ``positions``.

    ``positions`` (bool, (B, T-1)) limits the LM head and log-softmax to the tokens the loss reads;
    ``None`` runs the head everywhere. When the model accepts ``logits_to_keep`` the call goes
    through ``model`` itself (so DDP / FSDP / DeepSpeed wrappers see an ordinary forward) with a
    (B, T) bool mask: the model gathers the (N, d) hidden states of the kept positions and returns
    (N, V) logits. Otherwise :func:`sepo.logprobs.token_logps` gathers them from the body.
    ``unwrapped`` is the bare ``PreTrainedModel`` under any wrapper (``model`` itself if none).
    """
    unwrapped = model if unwrapped is None else unwrapped
    if positions is None or not accepts_logits_to_keep(unwrapped):
        return token_logps(unwrapped if positions is not None else model, input_ids, attention_mask, positions)
    keep = torch.cat([positions, positions.new_zeros(positions.shape[0], 1)], dim=1)  # (B, T); the last token scores nothing
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False).logits
    logits = logits.reshape(-1, logits.shape[-1])  # (N, V), rows in the row-major order of `positions`
    out = torch.zeros(positions.shape, dtype=torch.float32, device=input_ids.device)
    if logits.shape[0]:
        out[positions] = selective_log_softmax(logits, input_ids[:, 1:][positions]).float()
    return out


def bucketed_token_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor | None,
                         unwrapped=None, buckets: int = 1) -> torch.Tensor:
    """:func:`used_token_logps` of a right-padded batch, run as ``buckets`` groups of rows of similar length.

    A batch is padded to its longest row; the mini world's random batches are about half padding. Sorted
    by length and split into ``buckets`` groups, each group runs cut to its own longest row, and the
    log-probs land where the whole batch would have put them: the same values up to float rounding
    (causal attention never reads a right pad), with the padding mostly gone. One backward pass covers
    every group. ``buckets=1`` is :func:`used_token_logps` itself.
    """
    rows = input_ids.shape[0]
    if buckets <= 1 or rows < 2:
        return used_token_logps(model, input_ids, attention_mask, positions, unwrapped)
    lengths = attention_mask.sum(1)  # (2B,)
    filled = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None] < lengths[:, None]  # (2B, T)
    if not torch.equal(attention_mask.bool(), filled):
        raise ValueError("length buckets need right-padded rows (attention mask 1 then 0)")
    out = torch.zeros((rows, input_ids.shape[1] - 1), dtype=torch.float32, device=input_ids.device)
    for group in torch.argsort(lengths, stable=True).tensor_split(min(buckets, rows)):
        width = int(lengths[group].max())
        part = used_token_logps(model, input_ids[group, :width], attention_mask[group, :width],
                                None if positions is None else positions[group, : width - 1], unwrapped)  # (g, width-1)
        out[group, : width - 1] = part
    return out


def split_pairs(tensor: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(2B, ...) -> chosen half (B, ...), rejected half (B, ...)."""
    if tensor is None:
        return None, None
    half = tensor.shape[0] // 2
    return tensor[:half], tensor[half:]


# --------------------------------------------------------------------------------------------
# Collator and trainer
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class PreferenceCollator:
    """Pads tokenised pairs into (2B, T) model inputs; ``extra`` fields go to log-prob positions."""

    pad_id: int
    extra: tuple[str, ...] = ()

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return collate_pairs(features, self.pad_id, extra=self.extra)


class PreferenceTrainer(Trainer):
    """``transformers.Trainer`` whose loss is a :mod:`sepo.losses` registry entry."""

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, *args, loss: LossSpec, loss_kwargs: dict[str, Any] | None = None, ref_model=None,
                 head_on_used_positions: bool = True, precompute_ref_log_probs: bool = False,
                 precompute_ref_batch_size: int = 32, reference_cache_dir: str = "", length_buckets: int = 1, **kwargs):
        if loss.needs_reference and ref_model is None:
            raise ConfigError(f"loss {loss.name!r} needs a reference model")
        if not loss.needs_reference and ref_model is not None:
            raise ConfigError(f"loss {loss.name!r} is reference-free; do not load a reference model for it")
        super().__init__(*args, **kwargs)
        if quiet():
            self.remove_callback(PrinterCallback)
        self.loss = loss
        self.loss_kwargs = dict(loss_kwargs or {})
        self.head_on_used_positions = head_on_used_positions
        self.length_buckets = length_buckets
        self._window: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.ref_model = None if ref_model is None else self._prepare_reference(ref_model)
        if precompute_ref_log_probs and self.ref_model is not None:
            self._precompute_reference(precompute_ref_batch_size, reference_cache_dir)
        # rows as Python lists: the data loader reads one row at a time, and an Arrow row is slow to read
        # (the sampler only needs the length, so the batches are the same)
        for name in ("train_dataset", "eval_dataset"):
            if isinstance(getattr(self, name), Dataset):
                setattr(self, name, getattr(self, name).to_list())

    def _prepare_reference(self, ref_model):
        """Frozen reference on the training device (sharded like the policy under ZeRO-3 / FSDP)."""
        ref_model.eval()
        ref_model.requires_grad_(False)
        if self.is_deepspeed_enabled:
            import deepspeed

            ds_config = json.loads(json.dumps(self.accelerator.state.deepspeed_plugin.deepspeed_config))
            if ds_config.get("zero_optimization", {}).get("stage") != 3:
                ds_config["zero_optimization"] = {"stage": 0}
            ds_config.pop("optimizer", None)
            ds_config.pop("scheduler", None)
            engine, *_ = deepspeed.initialize(model=ref_model, config=ds_config)
            engine.eval()
            return engine
        if self.is_fsdp_enabled:
            return self.accelerator.prepare_model(ref_model, evaluation_mode=True)
        return ref_model.to(self.args.device)

    def _precompute_reference(self, batch_size: int, cache_dir: str) -> None:
        """Add each response's reference log-probs to the training (and evaluation) pairs as
        ``chosen_ref_logps`` / ``rejected_ref_logps``, then drop the reference: steps read them instead.

        They are computed as a step would (:func:`used_token_logps` through the prepared reference), in
        batches of ``batch_size`` pairs of similar length (:func:`sepo.scoring.response_logps`); every
        process computes all of them. With ``cache_dir`` (one process, no sharded reference) they are
        kept there, keyed by the reference's weights, the token ids and the code
        (:func:`sepo.scoring.cached_response_logps`).
        """
        from sepo.scoring import cached_response_logps

        reference, unwrapped, device = self.ref_model, self.accelerator.unwrap_model(self.ref_model), self.args.device
        head = self.head_on_used_positions

        def logps(input_ids, attention_mask, positions):
            return used_token_logps(reference, input_ids.to(device), attention_mask.to(device),
                                    positions.to(device) if head else None, unwrapped).cpu()

        sharded = self.accelerator.num_processes > 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled
        collator = self.data_collator

        def with_logps(dataset):
            chosen, rejected = cached_response_logps(
                unwrapped, dataset, batch_size=batch_size, pad_id=collator.pad_id, logps=logps,
                cache_dir=None if sharded or not cache_dir else cache_dir, via=f"used_token_logps/head={head}")
            for name, values in (("chosen_ref_logps", chosen), ("rejected_ref_logps", rejected)):
                if name in dataset.column_names:
                    dataset = dataset.remove_columns(name)
                dataset = add_column(dataset, name, [v.tolist() for v in values])
            return dataset

        self.train_dataset = with_logps(self.train_dataset)
        if self.eval_dataset is not None:
            self.eval_dataset = with_logps(self.eval_dataset)
        self.data_collator = dataclasses.replace(collator, extra=tuple(collator.extra) + ("ref_logps",))
        self.ref_model = None  # freed: no step runs it

    def loss_positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(2B, T-1) bool: the tokens whose log-probs the loss reads."""
        if self.loss.needs_selection:
            return batch["selected"] & batch["response_mask"]
        return batch["response_mask"]

    def pair_logps(self, model, batch: dict[str, torch.Tensor]) -> PairLogps:
        """Policy (and reference) log-probs of a collated batch, split into chosen and rejected halves."""
        used = self.loss_positions(batch) if self.head_on_used_positions else None
        unwrapped = self.accelerator.unwrap_model(model)
        policy = bucketed_token_logps(model, batch["input_ids"], batch["attention_mask"], used, unwrapped,
                                      self.length_buckets)  # (2B, T-1)
        ref = batch.get("ref_logps")  # precomputed (precompute_ref_log_probs), at the response positions
        if ref is None and self.ref_model is not None:
            with torch.no_grad():
                ref_used = batch["response_mask"] if self.head_on_used_positions else None
                ref = bucketed_token_logps(self.ref_model, batch["input_ids"], batch["attention_mask"], ref_used,
                                           self.accelerator.unwrap_model(self.ref_model), self.length_buckets)
        chosen_mask, rejected_mask = split_pairs(batch["response_mask"])
        chosen_selected, rejected_selected = split_pairs(batch.get("selected"))
        policy_chosen, policy_rejected = split_pairs(policy)
        ref_chosen, ref_rejected = split_pairs(ref)
        return PairLogps(policy_chosen, policy_rejected, chosen_mask, rejected_mask,
                         chosen_selected, rejected_selected, ref_chosen, ref_rejected)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        output = self.loss(self.pair_logps(model, inputs), **self.loss_kwargs)
        loss = output.losses.mean()
        window = self._window["train" if model.training else "eval"]
        for name, value in output.metrics().items():
            window[name].append(value)
        return (loss, output) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the loss metrics averaged over the window since the last log and over processes (``eval_`` after an evaluation)."""
        split = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        prefix = "eval_" if split == "eval" else ""
        names = sorted(name for name, values in self._window[split].items() if name != "loss" and values)
        if names:
            local = torch.tensor([sum(self._window[split][n]) / len(self._window[split][n]) for n in names],
                                 device=self.args.device)  # (metrics,)
            averaged = self.accelerator.gather(local[None]).mean(0)  # mean over processes
            logs.update({f"{prefix}{name}": float(value) for name, value in zip(names, averaged.tolist())})
        self._window[split].clear()
        super().log(logs, start_time)


# --------------------------------------------------------------------------------------------
# Config fields shared by the training stages
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainingStageConfig(StageConfig):
    """Training-loop parameters shared by the oracle and policy stages."""

    output_dir: str = help_field("", help="run directory: config.yaml, metrics.json, timing.json, model/, checkpoints/")
    seed: int = help_field(0, help="seed of weights' updates, data order (data_seed) and any sampling")
    learning_rate: float = help_field(5e-7, help="peak learning rate")
    lr_scheduler_type: str = help_field("linear", help="transformers scheduler name (linear, cosine, constant, ...)")
    warmup_ratio: float = help_field(0.0, help="fraction of the steps spent warming up the learning rate, in [0, 1)")
    num_train_epochs: float = help_field(1.0, help="epochs over the training pairs (max_steps > 0 takes precedence, as in transformers)")
    max_steps: int = help_field(-1, help="if > 0, the number of optimizer steps (overrides num_train_epochs)")
    per_device_batch_size: int = help_field(8, help="pairs per device per forward pass")
    gradient_accumulation_steps: int = help_field(1, help="forward passes per optimizer step; global batch = per_device x this x processes")
    weight_decay: float = help_field(0.0, help="AdamW weight decay")
    max_grad_norm: float = help_field(1.0, help="gradient clipping norm")
    bf16: bool = help_field(False, help="bfloat16 mixed precision (GPU)")
    gradient_checkpointing: bool = help_field(False, help="recompute activations in backward to save memory")
    logging_steps: int = help_field(1, help="optimizer steps per logged (averaged) metrics window")
    save_steps: int = help_field(0, help="save a checkpoint every this many optimizer steps (0: none); kept in checkpoints/")
    save_total_limit: int = help_field(0, help="keep at most this many checkpoints (0: all, e.g. for a reward-vs-KL frontier)")
    resume_from_checkpoint: str = help_field("", help="'' starts fresh; 'last' resumes from the newest checkpoint in output_dir/checkpoints; or a checkpoint path")
    max_length: int = help_field(512, help="prompt + response tokens kept (longer sequences are cut)")
    max_prompt_length: int = help_field(256, help="prompt tokens kept when a sequence is too long (its last ones)")
    drop_prompt_longer_than: int = help_field(0, help="drop (and count) pairs whose prompt has more tokens than this (0: keep all)")
    drop_response_shorter_than: int = help_field(0, help="drop (and count) pairs with a response of fewer tokens than this (0: keep all)")
    chat_template: str = help_field("", help="Jinja chat template (inline, or a path to a .jinja file) for tokenizers without one")
    precompute_ref_log_probs: bool = help_field(True, help="compute the reference's log-probs of every pair once, before "
                                                           "training (TRL's option of that name), instead of a reference "
                                                           "forward pass at every step of every epoch")
    precompute_ref_batch_size: int = help_field(32, help="pairs per forward pass when precomputing reference log-probs")
    reference_cache_dir: str = help_field("", help="keep precomputed reference log-probs here for later runs with the same "
                                                   "reference weights, pairs and code ('' for none; one process only)")
    length_buckets: int = help_field(1, help="run each batch as this many groups of rows of similar length, each cut to "
                                             "its own longest row (less padding; the same loss up to float rounding)")

    def validate(self) -> None:
        self._require(bool(self.output_dir), "output_dir", "a run directory is required")
        self._require(self.learning_rate > 0, "learning_rate", "must be > 0")
        self._require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "must be in [0, 1)")
        self._require(self.num_train_epochs > 0 or self.max_steps > 0, "num_train_epochs", "must be > 0 unless max_steps > 0")
        self._require(self.max_steps == -1 or self.max_steps > 0, "max_steps", "-1 (use epochs) or > 0")
        for name in ("per_device_batch_size", "gradient_accumulation_steps", "logging_steps", "max_length", "max_prompt_length",
                     "precompute_ref_batch_size", "length_buckets"):
            self._require(getattr(self, name) >= 1, name, "must be >= 1")
        for name in ("save_steps", "save_total_limit", "drop_prompt_longer_than", "drop_response_shorter_than"):
            self._require(getattr(self, name) >= 0, name, "must be >= 0")
        self._require(self.max_prompt_length < self.max_length, "max_prompt_length", "must be < max_length")
        self._require(self.max_grad_norm > 0, "max_grad_norm", "must be > 0")
        # a checkpoint between two logs would make a resumed run log a shorter window than an uninterrupted one
        self._require(self.save_steps % self.logging_steps == 0, "save_steps",
                      f"must be a multiple of logging_steps = {self.logging_steps} (so a resumed run logs the same windows)")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)


SNAPSHOTS = "snapshots"


class SnapshotCallback(TrainerCallback):
    """Save the model's weights (not a resumable checkpoint: no optimizer state) when given fractions of the
    run's optimizer steps are done, as ``snapshots/step-<N>``: the intermediate policies of a reward-vs-KL
    frontier, denser early where the policy moves fastest. The last step is not saved (``model/`` holds it)."""

    def __init__(self, fractions, run_dir: str | Path):
        self.fractions = tuple(fractions)
        self.directory = Path(run_dir) / SNAPSHOTS
        self.steps: set[int] = set()

    @staticmethod
    def steps_for(fractions, max_steps: int) -> list[int]:
        return sorted({min(max(1, round(f * max_steps)), max_steps) for f in fractions} - {max_steps})

    def on_train_begin(self, args, state, control, **kwargs):
        self.steps = set(self.steps_for(self.fractions, state.max_steps))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps and state.is_world_process_zero:
            model.save_pretrained(str(self.directory / f"step-{state.global_step}"))


def snapshot_steps(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, directory)`` of a run's snapshots, in training order."""
    found = [(int(p.name.split("-")[1]), p) for p in Path(run_dir, SNAPSHOTS).glob("step-*")]
    return sorted(found)


def training_arguments(config: TrainingStageConfig, do_eval: bool = False) -> TrainingArguments:
    """``TrainingArguments`` of a stage: checkpoints under ``output_dir/checkpoints``, no reporting services."""
    return TrainingArguments(
        output_dir=str(config.run_dir / CHECKPOINTS),
        seed=config.seed,
        data_seed=config.seed,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        bf16=config.bf16,
        activation_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit or None,
        eval_strategy="no",
        do_eval=do_eval,
        remove_unused_columns=False,
        label_names=[],
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=quiet(),
        dataloader_num_workers=0,
    )


# --------------------------------------------------------------------------------------------
# Loading, with one clear error before any training
# --------------------------------------------------------------------------------------------
def _check_source(path: str, field: str, kind: str) -> None:
    """A local path must exist; anything else must look like a hub id (``org/name``)."""
    if not path:
        raise ConfigError(f"{field}: a {kind} path is required")
    if Path(path).exists():
        return
    if Path(path).is_absolute() or path.startswith(".") or not _HUB_ID.match(path):
        raise ConfigError(f"{field} = {path!r}: no such {kind} directory (and not a hub id of the form org/name)")


def silence_library_progress() -> None:
    """Under CI / ``SEPO_QUIET``, the libraries' own progress bars (weights, dataset saves) are off too."""
    if quiet():
        hf_logging.disable_progress_bar()
        datasets_logging.disable_progress_bar()


def read_chat_template(value: str) -> str:
    """A chat template given inline, or the text of a ``.jinja`` file (which must exist)."""
    if value.endswith(".jinja"):
        if not Path(value).is_file():
            raise ConfigError(f"chat_template = {value!r}: no such file (relative paths start at the working directory)")
        return Path(value).read_text()
    return value


def load_tokenizer(path: str, field: str, chat_template: str = ""):
    """Tokenizer of a model directory or hub id, with a pad token and (if given) a chat template."""
    _check_source(path, field, "tokenizer")
    template = read_chat_template(chat_template) if chat_template else ""
    silence_library_progress()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{field} = {path!r}: cannot load a tokenizer ({err})") from err
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"{field} = {path!r}: the tokenizer has no eos_token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = template
    return tokenizer


def load_causal_lm(path: str, field: str, bf16: bool = False):
    """A causal LM from a model directory or hub id; a missing path is a :class:`ConfigError` naming ``field``."""
    _check_source(path, field, "model")
    silence_library_progress()
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{field} = {path!r}: cannot load a causal LM ({err})") from err


_FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def json_line_numbers(path: Path) -> list[int] | None:
    """The 1-based line of each row of a JSON-lines file (blank lines hold no row).

    ``None`` for a file that is one JSON document (an array of rows, or a mapping of columns): its rows
    have no line of their own and errors name their index. Every line of a JSON-lines file is parsed
    here, so a line that is not a JSON object is a :class:`DataError` naming it (the ``datasets``
    loader would only say that generating the dataset failed).
    """
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        pass
    else:
        if not (isinstance(document, dict) and len(text.strip().split("\n")) == 1):
            return None
    numbers = []
    for number, line in enumerate(text.split("\n"), start=1):  # the loader splits rows at "\n" only
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {number}: a JSON {type(row).__name__}, expected an object (one row per line)")
        numbers.append(number)
    return numbers


def data_source(path: str, split: str) -> str:
    """How errors name a data source: a local file by its path, a dataset with splits by path and split."""
    return path if Path(path).is_file() or not split else f"{path} [{split}]"


def load_preferences(path: str, split: str, field: str = "data_path") -> Dataset:
    """One split of preference data: a ``save_to_disk`` directory, a local data file, or a hub dataset id.

    A local file holds one split, ``train``. ``split=''`` takes the only split of a one-split source; a
    saved single ``Dataset`` has no splits, so naming one for it is an error. The rows come with where
    they are in the data (:func:`sepo.data.with_source_rows`: ``row``, and ``line`` for JSON lines), so
    errors raised after any split or filter still name them.
    """
    _check_source(path, field, "dataset")
    local = Path(path)
    lines = None
    try:
        if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "dataset_info.json").exists()):
            data = load_from_disk(str(local))
        elif local.is_file():
            if local.suffix not in _FILE_FORMATS:
                raise ConfigError(f"{field} = {path!r}: unknown data file type (use one of {sorted(_FILE_FORMATS)})")
            if _FILE_FORMATS[local.suffix] == "json":
                lines = json_line_numbers(local)
            data = load_dataset(_FILE_FORMATS[local.suffix], data_files={"train": str(local)})  # one file = split "train"
        else:
            data = load_dataset(path)
    except (FileNotFoundError, OSError) as err:
        raise ConfigError(f"{field} = {path!r}: cannot load a dataset ({err})") from err
    except DatasetGenerationError as err:  # e.g. a column holding a string in one row and a list in another
        raise DataError(f"{path}: cannot be read as one table ({err.__cause__ or err})") from None
    if isinstance(data, DatasetDict):
        if not split and len(data) == 1:
            return with_source_rows(next(iter(data.values())), lines)
        if not split:
            raise ConfigError(f"{field} = {path!r} holds splits {sorted(data)}; name one")
        if split not in data:
            raise ConfigError(f"{field} = {path!r} has no split {split!r}; splits: {sorted(data)}")
        return with_source_rows(data[split], lines)
    if split:
        raise ConfigError(f"{field} = {path!r} is a single dataset without splits; split {split!r} does not exist (use '')")
    return with_source_rows(data, lines)


def require_columns(dataset: Dataset, columns: tuple[str, ...], what: str) -> None:
    """A :class:`DataError` naming the missing columns when a dataset does not fit a stage."""
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise DataError(f"{what}: missing column(s) {missing}; it has {dataset.column_names}")


def resolve_checkpoint(config: TrainingStageConfig) -> str | None:
    """The checkpoint to resume from (``None`` for a fresh run); a missing one is a :class:`ConfigError`."""
    value = config.resume_from_checkpoint
    if not value:
        return None
    if value == "last":
        found = sorted((config.run_dir / CHECKPOINTS).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        if not found:
            raise ConfigError(f"resume_from_checkpoint = 'last': no checkpoint in {config.run_dir / CHECKPOINTS}")
        return str(found[-1])
    if not (Path(value) / "trainer_state.json").exists():
        raise ConfigError(f"resume_from_checkpoint = {value!r}: not a checkpoint directory (no trainer_state.json)")
    return value


# --------------------------------------------------------------------------------------------
# Metrics and the run record
# --------------------------------------------------------------------------------------------
def train_log_summary(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """Deterministic training metrics from the logged windows (restored on resume, so a resumed run agrees).

    ``train/loss_mean`` averages every logged window, ``train/<name>`` is the last window's value.
    Wall-clock entries (runtime, samples per second, ...) are left out.
    """
    windows = [entry for entry in log_history if "loss" in entry and not any(k.startswith("eval_") for k in entry)]
    out: dict[str, float] = {}
    if windows:
        out["train/loss_mean"] = sum(e["loss"] for e in windows) / len(windows)
        for name, value in windows[-1].items():
            if name in ("epoch", "step", "learning_rate", "grad_norm") or not isinstance(value, (int, float)):
                continue
            out[f"train/{name}"] = float(value)
    return out


def is_wall_clock(name: str) -> bool:
    return any(part in name for part in ("runtime", "per_second", "flos"))


def save_final_model(trainer: Trainer, config: TrainingStageConfig, tokenizer) -> Path:
    """The trained weights and the tokenizer under ``output_dir/model`` (gathered from all shards)."""
    target = config.run_dir / MODEL
    trainer.save_model(str(target))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(target))
    return target


def write_records(config: TrainingStageConfig, metrics: dict[str, Any], timing: dict[str, Any]) -> None:
    """``timing.json`` (wall clock), then ``config.yaml`` and ``metrics.json`` (deterministic), written last."""
    write_json(config.run_dir / "timing.json", timing)
    write_run_record(config.run_dir, config, metrics)  # strict JSON: a NaN metric is written as null
