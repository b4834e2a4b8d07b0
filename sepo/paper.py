"""Paper-tier data preparation: UltraFeedback's conversational layout and the paper's filters.

``HuggingFaceH4/ultrafeedback_binarized`` (split ``train_prefs``) stores ``prompt`` as a string and
``chosen`` / ``rejected`` as whole conversations (``[user, assistant]`` message lists), with
``score_chosen`` / ``score_rejected``. Training needs TRL's conversational preference layout
instead: ``prompt`` = every message before the last assistant turn (rendered with the tokenizer's
chat template and a generation prompt), ``chosen`` / ``rejected`` = that last turn alone.

The paper drops pairs whose prompt has more than 1,900 tokens or whose responses have fewer than
8 tokens, and cuts sequences at 2,048 tokens. The numbers live in ``configs/paper/*.yaml``; the
drops and cuts are counted in a :class:`sepo.data.TokenizeReport` and reported in ``metrics.json``.
"""

from __future__ import annotations

from datasets import Dataset

from sepo.data import TokenizeReport, tokenize_preferences, where
from sepo.errors import DataError


def _is_messages(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


def is_conversation_layout(dataset: Dataset) -> bool:
    """True when ``chosen`` holds whole conversations that still include the prompt turns."""
    if len(dataset) == 0 or "chosen" not in dataset.column_names:
        return False
    first = dataset[0]
    return _is_messages(first["chosen"]) and len(first["chosen"]) > 1 and not _is_messages(first.get("prompt"))


def split_conversation(row: dict, index: int, source: str = "") -> dict:
    """One UltraFeedback row -> ``prompt`` messages, ``chosen`` / ``rejected`` last assistant turns.

    Errors name ``source`` and the row (:func:`sepo.data.where`).
    """
    at = where(row, index, source)
    turns = {}
    for name in ("chosen", "rejected"):
        value = row.get(name)
        if not _is_messages(value):
            raise DataError(f"{at}: field '{name}' must be a non-empty list of {{role, content}} messages")
        if value[-1]["role"] != "assistant":
            raise DataError(f"{at}: field '{name}' must end with an assistant message")
        turns[name] = value
    context = turns["chosen"][:-1]
    if not context:
        raise DataError(f"{at}: field 'chosen' has no turn before the assistant's answer")
    if context != turns["rejected"][:-1]:
        raise DataError(f"{at}: 'chosen' and 'rejected' differ before their last assistant turn")
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt.strip() and context[-1]["content"] != prompt:
        raise DataError(f"{at}: field 'prompt' is not the last user turn of 'chosen'")
    return {"prompt": [dict(m) for m in context], "chosen": [dict(turns["chosen"][-1])],
            "rejected": [dict(turns["rejected"][-1])]}


def to_conversational(dataset: Dataset, source: str = "") -> Dataset:
    """The whole dataset in TRL's conversational layout; other columns (scores, ids, ``row``) are kept."""
    return dataset.map(split_conversation, with_indices=True, fn_kwargs={"source": source}, desc="conversational layout")


def prepare_preferences(dataset: Dataset, tokenizer, *, max_length: int, max_prompt_length: int,
                        drop_prompt_longer_than: int = 0, drop_response_shorter_than: int = 0,
                        source: str = "") -> tuple[Dataset, TokenizeReport]:
    """Tokenise preference data of either tier (``0`` disables a filter); returns the report of what was dropped or cut.

    Whole conversations (UltraFeedback) are first split into prompt turns and the last answer.
    A message prompt needs a tokenizer with a chat template. Errors name ``source`` (the file or
    dataset) and the row.
    """
    if is_conversation_layout(dataset):
        dataset = to_conversational(dataset, source)
    if len(dataset) and _is_messages(dataset[0]["prompt"]) and not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{source or 'data'}: the prompts are message lists but the tokenizer has no chat template "
                        "(set chat_template)")
    return tokenize_preferences(
        dataset, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length,
        drop_prompt_longer_than=drop_prompt_longer_than or None,
        drop_response_shorter_than=drop_response_shorter_than or None, source=source,
    )
