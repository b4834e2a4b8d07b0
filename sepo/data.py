"""Preference data: validation, tokenisation and batching.

Input is TRL's preference format: columns ``prompt``, ``chosen`` and ``rejected``, either plain
strings or conversational message lists (``[{"role": ..., "content": ...}, ...]``, rendered through
the tokenizer's chat template). In the conversational layout of UltraFeedback, ``chosen`` and
``rejected`` hold the whole conversation; the response is its last assistant message.

Tokenisation keeps prompt and response apart:

* ``prompt_ids``   = the prompt, with the tokenizer's special tokens (e.g. BOS);
* ``chosen_ids``   = the chosen response alone, tokenised without special tokens, EOS appended;
* ``chosen_offsets`` = character span of each response token in the response text (EOS: ``(n, n)``).

A model sees ``prompt_ids + chosen_ids``. Token rewards, gold credit and selections are all lists
aligned with the *response* tokens, so response token ``i`` sits at sequence position
``len(prompt_ids) + i`` and is scored by ``logps[:, len(prompt_ids) + i - 1]`` (see
:mod:`sepo.logprobs` for the shift convention).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from datasets import Dataset

from sepo.errors import DataError, TokenizerMismatchError
from sepo.logprobs import response_positions
from sepo.utils import add_column, column, select_rows

REQUIRED_COLUMNS = ("prompt", "chosen", "rejected")
RESPONSES = ("chosen", "rejected")

# Where a row came from, carried through splits, filters, tokenisation and scoring so that an error
# raised at any stage names the row in the user's data (added by sepo.trainer.load_preferences):
ROW = "row"  # the row's index (0-based) in the data as loaded: the file, or the split of a dataset
LINE = "line"  # its line (1-based) when the data is a JSON-lines file
PROMPT_ID = "prompt_id"  # named in errors when the data has it


# --------------------------------------------------------------------------------------------
# Where a row came from
# --------------------------------------------------------------------------------------------
def where(row: dict, index: int, source: str = "") -> str:
    """The row's place in the user's data, for an error message: ``data.jsonl line 2 (prompt_id 'p1')``.

    ``line`` of a JSON-lines file, else ``row`` (its index in the data as loaded), else ``index``
    (its position in the dataset at hand); ``source`` names the file or dataset.
    """
    if row.get(LINE) is not None:
        place = f"line {row[LINE]}"
    else:
        place = f"row {row[ROW] if row.get(ROW) is not None else index}"
    if row.get(PROMPT_ID) is not None:
        place += f" (prompt_id {row[PROMPT_ID]!r})"
    return f"{source} {place}" if source else place


def row_places(dataset: Dataset, source: str = "") -> list[str]:
    """:func:`where` for every row of ``dataset`` (read column by column, without the text)."""
    columns = {name: column(dataset, name) for name in (ROW, LINE, PROMPT_ID) if name in dataset.column_names}
    return [where({name: values[i] for name, values in columns.items()}, i, source) for i in range(len(dataset))]


def with_source_rows(dataset: Dataset, lines: Sequence[int] | None = None) -> Dataset:
    """``dataset`` with its ``row`` index (and, for a JSON-lines file, ``line``) as columns.

    Columns already there are kept: data saved by a stage (an oracle's scored pairs) still names the
    rows of the data it was made from.
    """
    if ROW not in dataset.column_names:
        dataset = dataset.add_column(ROW, list(range(len(dataset))))
    if lines is not None and LINE not in dataset.column_names:
        if len(lines) != len(dataset):
            raise DataError(f"{len(lines)} JSON lines but {len(dataset)} rows were loaded")
        dataset = dataset.add_column(LINE, list(lines))
    return dataset


# --------------------------------------------------------------------------------------------
# Text of a row
# --------------------------------------------------------------------------------------------
def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


def prompt_text(tokenizer, prompt: str | list[dict]) -> str:
    """The prompt as text: a string as is, a message list through the chat template."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def response_text(response: str | list[dict]) -> str:
    """The response as text: a string as is, or the content of the last (assistant) message."""
    if isinstance(response, str):
        return response
    return response[-1]["content"]


def validate_row(row: dict, index: int, source: str = "") -> None:
    """Raise :class:`DataError` naming the row (:func:`where`) and the field if the row is malformed."""
    for name in REQUIRED_COLUMNS:
        if name not in row:
            raise DataError(f"{where(row, index, source)}: missing field '{name}'")
        value = row[name]
        if not (isinstance(value, str) or _is_messages(value)):
            raise DataError(
                f"{where(row, index, source)}: field '{name}' must be a string or a list of {{role, content}} "
                f"messages, got {type(value).__name__}"
            )
        if _is_messages(value) and not value:
            raise DataError(f"{where(row, index, source)}: field '{name}' is an empty message list")
    for name in RESPONSES:
        value = row[name]
        if _is_messages(value) and value[-1]["role"] != "assistant":
            raise DataError(f"{where(row, index, source)}: field '{name}' must end with an assistant message")
        if not response_text(value).strip():
            raise DataError(f"{where(row, index, source)}: field '{name}' is an empty response")


def check_columns(dataset: Dataset, source: str = "") -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise DataError(f"{source or 'dataset'} is missing column(s) {missing}; has {dataset.column_names}")


# --------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------
def tokenize_prompt(tokenizer, prompt: str | list[dict]) -> list[int]:
    """Token ids of the prompt, with the tokenizer's own special tokens (e.g. BOS).

    A chat-templated prompt already carries its special tokens, so none are added twice.
    """
    return tokenize_prompts(tokenizer, [prompt])[0]


def tokenize_prompts(tokenizer, prompts: Sequence[str | list[dict]]) -> list[list[int]]:
    """:func:`tokenize_prompt` of many prompts, encoded in one call per kind (plain text or chat messages)."""
    out: list[list[int] | None] = [None] * len(prompts)
    for plain in (True, False):
        places = [i for i, p in enumerate(prompts) if isinstance(p, str) == plain]
        if places:
            texts = [prompt_text(tokenizer, prompts[i]) for i in places]
            for i, ids in zip(places, tokenizer(texts, add_special_tokens=plain)["input_ids"]):
                out[i] = list(ids)
    return out


def tokenize_response(tokenizer, response: str | list[dict]) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the response followed by EOS, and each token's character span in the text."""
    return tokenize_responses(tokenizer, [response])[0]


def tokenize_responses(tokenizer, responses: Sequence[str | list[dict]]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """:func:`tokenize_response` of many responses, encoded in one call."""
    eos_id = tokenizer.eos_token_id  # read once: each read is a vocabulary lookup in transformers
    if eos_id is None:
        raise TokenizerMismatchError("tokenizer has no eos_token; set one before tokenising responses")
    if not responses:
        return []
    texts = [response_text(r) for r in responses]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [(list(ids) + [eos_id], [tuple(o) for o in offsets] + [(len(text), len(text))])
            for text, ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"])]


@dataclasses.dataclass
class TokenizeReport:
    """What tokenisation dropped or cut, so that nothing is lost silently."""

    rows_in: int = 0
    rows_out: int = 0
    dropped_long_prompt: int = 0
    dropped_short_response: int = 0
    truncated_prompt: int = 0
    truncated_response: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def tokenize_preferences(
    dataset: Dataset,
    tokenizer,
    *,
    max_length: int = 512,
    max_prompt_length: int | None = None,
    drop_prompt_longer_than: int | None = None,
    drop_response_shorter_than: int | None = None,
    keep_text: bool = True,
    source: str = "",
) -> tuple[Dataset, TokenizeReport]:
    """Tokenise a TRL-format preference dataset.

    Adds ``prompt_ids``, ``chosen_ids``, ``rejected_ids``, ``chosen_offsets``, ``rejected_offsets``
    and ``row`` (the input's own ``row`` column when it has one, from
    :func:`sepo.trainer.load_preferences`, else the row's index in the input), so every later error
    can name the row. Errors name ``source`` (the file or dataset) and the row (:func:`where`).

    Rows are *dropped* (and counted in the report) when the prompt is longer than
    ``drop_prompt_longer_than`` tokens or a response is shorter than ``drop_response_shorter_than``
    tokens (the paper's filters). Otherwise sequences longer than ``max_length`` are cut: the prompt
    keeps its last ``max_prompt_length`` tokens, then the response is cut at the end. A response left
    with no token after that is an error naming the row.
    """
    check_columns(dataset)
    if max_prompt_length is None:
        max_prompt_length = max_length // 2
    if not 0 < max_prompt_length < max_length:
        raise DataError(f"max_prompt_length={max_prompt_length} must be in (0, max_length={max_length})")
    report = TokenizeReport(rows_in=len(dataset))
    columns: dict[str, list] = {ROW: [], "prompt_ids": []}
    for name in RESPONSES:
        columns[f"{name}_ids"] = []
        columns[f"{name}_offsets"] = []
    keep_rows: list[int] = []
    rows = list(dataset)
    for index, row in enumerate(rows):
        validate_row(row, index, source)
    prompt_ids = tokenize_prompts(tokenizer, [row["prompt"] for row in rows])
    response_ids = {name: tokenize_responses(tokenizer, [row[name] for row in rows]) for name in RESPONSES}
    for index, row in enumerate(rows):
        p_ids = prompt_ids[index]
        if not p_ids:
            raise DataError(f"{where(row, index, source)}: field 'prompt' gives no token "
                            "(the first response token needs a context)")
        responses = {name: response_ids[name][index] for name in RESPONSES}
        if drop_prompt_longer_than is not None and len(p_ids) > drop_prompt_longer_than:
            report.dropped_long_prompt += 1
            continue
        if drop_response_shorter_than is not None and min(len(r[0]) - 1 for r in responses.values()) < drop_response_shorter_than:
            report.dropped_short_response += 1
            continue
        longest = max(len(r[0]) for r in responses.values())
        if len(p_ids) + longest > max_length and len(p_ids) > max_prompt_length:
            p_ids = p_ids[-max_prompt_length:]
            report.truncated_prompt += 1
        budget = max_length - len(p_ids)
        if budget <= 0:
            raise DataError(f"{where(row, index, source)}: the prompt fills max_length={max_length}; no response token is left")
        cut = False
        for name, (ids, offsets) in responses.items():
            if len(ids) > budget:
                ids, offsets = ids[:budget], offsets[:budget]
                cut = True
            columns[f"{name}_ids"].append(ids)
            columns[f"{name}_offsets"].append([list(o) for o in offsets])
        report.truncated_response += int(cut)
        columns[ROW].append(row[ROW] if row.get(ROW) is not None else index)
        columns["prompt_ids"].append(p_ids)
        keep_rows.append(index)
    report.rows_out = len(keep_rows)
    if not keep_rows:
        raise DataError(f"{source or 'data'}: no row left after filtering: {report.to_dict()}")
    base = select_rows(dataset, keep_rows) if keep_text else Dataset.from_dict({})
    if not keep_text:
        return Dataset.from_dict(columns), report
    for name in columns:
        if name in base.column_names:
            base = base.remove_columns(name)
    for name, values in columns.items():
        base = add_column(base, name, values)
    return base, report


def check_same_tokenizer(a, b, what: str = "oracle and reference") -> None:
    """Raise :class:`TokenizerMismatchError` unless two tokenizers map text to the same ids."""
    if a.get_vocab() != b.get_vocab():
        raise TokenizerMismatchError(
            f"{what} tokenizers differ (vocab sizes {len(a.get_vocab())} vs {len(b.get_vocab())}); "
            "token rewards need one shared tokenizer"
        )
    for name in ("bos_token_id", "eos_token_id"):
        if getattr(a, name) != getattr(b, name):
            raise TokenizerMismatchError(f"{what} tokenizers differ in {name}: {getattr(a, name)} vs {getattr(b, name)}")


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------
def _row_spans(starts: Sequence[int], lengths: Sequence[int], width: int) -> torch.Tensor:
    """(B, width) bool mask, true in row ``i`` at columns ``starts[i] .. starts[i] + lengths[i] - 1``."""
    columns = torch.arange(width)[None]  # (1, width)
    starts_t = torch.as_tensor(starts, dtype=torch.long)[:, None]  # (B, 1)
    return (columns >= starts_t) & (columns < starts_t + torch.as_tensor(lengths, dtype=torch.long)[:, None])


def _flat(lists: Sequence[Sequence], dtype) -> torch.Tensor:
    """Every value of a ragged list of lists, in order, as one tensor."""
    return torch.as_tensor([v for x in lists for v in x], dtype=dtype)


def pad_lists(lists: Sequence[Sequence], value, dtype=None) -> torch.Tensor:
    """Right-pad a ragged list of lists into a (len(lists), longest) tensor."""
    lengths = [len(x) for x in lists]
    width = max(lengths, default=0)
    out = torch.full((len(lists), width), value, dtype=dtype)
    if width:
        out[_row_spans([0] * len(lists), lengths, width)] = _flat(lists, out.dtype)
    return out


def build_sequences(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int,
                    response_values: dict[str, Sequence[Sequence]] | None = None) -> dict[str, torch.Tensor]:
    """Concatenate prompt and response ids and right-pad.

    Returns ``input_ids`` and ``attention_mask`` (B, T), and ``response_mask`` (B, T-1), true at the
    log-prob positions that score a response token: position ``t`` scores ``input_ids[:, t+1]``.
    Each entry of ``response_values`` (per-response-token lists, e.g. selections or scores) is
    placed at the same (B, T-1) positions, zero/False elsewhere.
    """
    seqs = [list(p) + list(r) for p, r in zip(prompts, responses)]
    input_ids = pad_lists(seqs, pad_id, torch.long)
    batch, width = input_ids.shape
    lengths = [len(s) for s in seqs]
    attention_mask = _row_spans([0] * batch, lengths, width).long()
    starts = [response_positions(len(p), len(r)).start for p, r in zip(prompts, responses)]
    response_mask = _row_spans(starts, [len(r) for r in responses], max(width - 1, 0))
    out = {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}
    for name, values in (response_values or {}).items():
        first = next((v for v in values if len(v)), [0.0])
        dtype = torch.bool if isinstance(first[0], bool) else torch.float32
        for i, v in enumerate(values):
            if len(v) != len(responses[i]):
                raise DataError(f"{name}: {len(v)} values for a response of {len(responses[i])} tokens (batch item {i})")
        placed = torch.zeros(batch, max(width - 1, 0), dtype=dtype)
        placed[response_mask] = _flat(values, dtype)
        out[name] = placed
    return out


def collate_pairs(features: list[dict], pad_id: int, extra: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Batch preference pairs: chosen rows first, then rejected rows, in one (2B, T) tensor.

    ``extra`` names per-response-token fields stored as ``chosen_<name>`` / ``rejected_<name>``
    (e.g. ``selected``, ``scores``); they come back as ``<name>`` at the log-prob positions.
    """
    prompts = [f["prompt_ids"] for f in features] * 2
    responses = [f["chosen_ids"] for f in features] + [f["rejected_ids"] for f in features]
    values = {name: [f[f"chosen_{name}"] for f in features] + [f[f"rejected_{name}"] for f in features] for name in extra}
    return build_sequences(prompts, responses, pad_id, values)

