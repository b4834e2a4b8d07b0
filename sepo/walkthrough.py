"""One scored pair, every quantity of the method side by side (notebook 01)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sepo.errors import ConfigError


def pair_walkthrough(pipe, oracle_dir: str | Path, index: int, k: float = 0.3) -> dict[str, Any]:
    """Everything the walkthrough shows for one scored pair: tokens, oracle rewards, gold credit, the
    SePO selection (``topk`` at ``k_w = k_l = k``), and the SFT policy's per-token log-probs at the
    response tokens."""
    import torch
    from transformers import AutoTokenizer

    from sepo.analysis import gold_token_credit
    from sepo.data import build_sequences
    from sepo.logprobs import token_logps
    from sepo.oracle import load_scored
    from sepo.selectors import select_from_scores
    from sepo.trainer import load_causal_lm

    scored = load_scored(str(oracle_dir))
    if not 0 <= index < len(scored):
        raise ConfigError(f"pair_index = {index}: the scored data has {len(scored)} pairs")
    row = scored[index]
    tokenizer = AutoTokenizer.from_pretrained(str(pipe.world.tokenizer_path))
    (sel_w,), (sel_l,) = select_from_scores([row["chosen_scores"]], [row["rejected_scores"]], "topk", k_w=k, k_l=k)
    policy = load_causal_lm(pipe.sft_path(pipe.config.policy_size), "policy").eval()
    batch = build_sequences([row["prompt_ids"]] * 2, [row["chosen_ids"], row["rejected_ids"]], tokenizer.pad_token_id)
    with torch.no_grad():
        logps = token_logps(policy, batch["input_ids"], batch["attention_mask"])
    out = {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"],
           "chosen_gold": row.get("chosen_gold"), "rejected_gold": row.get("rejected_gold")}
    for i, side, sel in ((0, "chosen", sel_w), (1, "rejected", sel_l)):
        out[f"{side}_tokens"] = [tokenizer.decode([t]) for t in row[f"{side}_ids"]]  # readable text of each token
        out[f"{side}_ids"] = row[f"{side}_ids"]
        out[f"{side}_scores"] = row[f"{side}_scores"]
        out[f"{side}_credit"] = gold_token_credit(scored.select([index]), side)[0]
        out[f"{side}_selected"] = sel
        out[f"{side}_logps"] = logps[i][batch["response_mask"][i]].tolist()
    return out
