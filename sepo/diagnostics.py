"""Per-policy diagnostics on held-out preference pairs: likelihood displacement and the end of text.

Reported failure modes of preference losses show in how a trained policy scores responses it never
trained on: both the chosen and the rejected response can lose probability ("likelihood
displacement"), and a policy can unlearn how to end a response. For held-out pairs this module
measures, for a model ``pi``:

* ``chosen_logp`` / ``rejected_logp``: mean over pairs of the mean per-token log-prob of the response's
  text tokens, ``1/|y| sum_t log pi(y_t | x, y_<t)`` (EOS excluded);
* ``eos_logp``: mean log-prob of EOS where the held-out response ends, ``log pi(EOS | x, y)``, over both
  sides.

A table row reports these for the policy next to the same numbers for its SFT model (the difference is
the change training made).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def heldout_logps(model, tokenizer, pairs, *, max_length: int, max_prompt_length: int, batch_size: int = 32) -> dict[str, Any]:
    """The diagnostics above for ``model`` on ``pairs`` (a TRL-format preference dataset, or one that
    :func:`sepo.data.tokenize_preferences` already tokenised with ``tokenizer``); the response tokens' log-probs
    come from :func:`sepo.scoring.response_logps` (batches of similar length, the LM head only there)."""
    from sepo.data import tokenize_preferences
    from sepo.scoring import response_logps

    tokenized = pairs if "prompt_ids" in pairs.column_names else tokenize_preferences(
        pairs, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)[0]
    eos = tokenizer.eos_token_id
    model.eval()
    chosen, rejected = response_logps(model, tokenized, batch_size=batch_size, pad_id=tokenizer.pad_token_id)
    means: dict[str, list[float]] = {"chosen": [], "rejected": []}
    eos_logps: list[float] = []
    for side, logps in (("chosen", chosen), ("rejected", rejected)):
        for ids, row in zip(tokenized[f"{side}_ids"], logps):
            values = row.tolist()
            ended = ids[-1] == eos  # a response cut at max_length has no EOS to score
            text = values[:-1] if ended else values
            if text:
                means[side].append(float(np.mean(text)))
            if ended:
                eos_logps.append(values[-1])
    return {"chosen_logp": float(np.mean(means["chosen"])), "rejected_logp": float(np.mean(means["rejected"])),
            "eos_logp": float(np.mean(eos_logps)) if eos_logps else float("nan"), "n_pairs": len(tokenized)}
