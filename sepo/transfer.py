"""Carrying per-token values across tokenizers by character offsets (the cross-tokenizer question, R3).

SePO requires the oracle and the policy to share a tokenizer. When they do not, the oracle's
token rewards can still be mapped onto the policy's tokens through the text they cover: every
source token spreads its value over the characters it spans, and a target token collects the
value of the characters it spans. For source token ``s`` with span ``[a_s, b_s)`` and target
token ``t`` with span ``[a_t, b_t)``::

    r(t) = sum_s r(s) * |[a_s, b_s) ∩ [a_t, b_t)| / (b_s - a_s)

so the response's total reward is preserved. A zero-width token (EOS, span ``(n, n)``) passes its
value to a zero-width target token at the same place, or else is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from sepo.errors import DataError


def carry_values(
    source_values: Sequence[float],
    source_offsets: Sequence[Sequence[int]],
    target_offsets: Sequence[Sequence[int]],
) -> list[float]:
    """Values of source tokens spread onto target tokens in proportion to shared characters."""
    if len(source_values) != len(source_offsets):
        raise DataError(f"{len(source_values)} values for {len(source_offsets)} source tokens")
    out = [0.0] * len(target_offsets)
    for value, (a_s, b_s) in zip(source_values, source_offsets):
        width = b_s - a_s
        if width <= 0:
            for j, (a_t, b_t) in enumerate(target_offsets):
                if a_t == b_t == a_s:
                    out[j] += value
                    break
            continue
        for j, (a_t, b_t) in enumerate(target_offsets):
            shared = min(b_s, b_t) - max(a_s, a_t)
            if shared > 0:
                out[j] += value * shared / width
    return out


def carry_column(
    values: Sequence[Sequence[float]],
    source_offsets: Sequence[Sequence[Sequence[int]]],
    target_offsets: Sequence[Sequence[Sequence[int]]],
    rows: Sequence[int] | None = None,
) -> list[list[float]]:
    """:func:`carry_values` for every response of a dataset; errors name the row."""
    rows = list(range(len(values))) if rows is None else list(rows)
    out = []
    for i, (v, s, t) in enumerate(zip(values, source_offsets, target_offsets)):
        try:
            out.append(carry_values(v, s, t))
        except DataError as err:
            raise DataError(f"row {rows[i]}: {err}") from None
    return out


def carry_scores_to(scored, tokenizer, *, max_length: int, max_prompt_length: int):
    """Re-tokenise a scored dataset with another tokenizer and carry its token rewards by character offsets;
    returns the new dataset and the report of that tokenisation (what it dropped or cut)."""
    from sepo.data import tokenize_preferences

    text = scored.select_columns([c for c in scored.column_names if not c.endswith(("_ids", "_offsets", "_scores")) and c != "row"])
    retokenized, report = tokenize_preferences(text, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)
    for side in ("chosen", "rejected"):
        carried = carry_column(scored[f"{side}_scores"], scored[f"{side}_offsets"], retokenized[f"{side}_offsets"], retokenized["row"])
        retokenized = retokenized.add_column(f"{side}_scores", carried)
    return retokenized, report
