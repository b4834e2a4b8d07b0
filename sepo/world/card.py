"""The world card: is the mini world a fair test bed for the methods, before any policy is looked at?

A verdict about SePO means something only if the world it is measured in resembles the one the paper
assumed: preference labels that mostly agree with the true reward, an oracle that is a competent reward
model, token rewards that track the true per-token credit, and responses that end because they are
finished. The card measures each of these on the world's pairs and its default oracles (one per seed),
beside a target for the default world and what is known at the paper's scale (UltraFeedback), and says
which targets are met. It reads runs; it trains nothing but the default oracles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# key -> (target as (comparison, value) or None, what is known at the paper's scale, what it measures)
CARD = {
    "label_agreement": ((">=", 0.85), "most labels agree with the rater (chosen is the best-rated of four completions)",
                        "share of pairs whose chosen response has the higher gold reward (all splits)"),
    "oracle_heldout_accuracy": ((">=", 0.72), "DPO-trained 1-7B reward models order about 70-75% of held-out pairs",
                                "default oracle: share of held-out pairs whose implicit reward orders them correctly"),
    "target_pair_accuracy": ((">=", 0.70), "not reported",
                             "share of the scored target pairs whose summed token rewards favour the chosen response"),
    "spearman_chosen": ((">=", 0.35), "not measurable (no per-token credit)",
                        "mean per-response Spearman correlation of token rewards with gold credit, chosen responses"),
    "cutoff_share": (("<=", 0.02), "responses are finished texts",
                     "share of pair responses as long as the sampling limit (cut off rather than finished)"),
    "mean_response_tokens": (None, "a few hundred tokens", "mean tokens of a scored response, EOS included"),
    "eos_share": (None, "well under 1%", "share of EOS among the scored response tokens"),
    "chosen_longer_share": (None, "not known", "share of scored pairs whose chosen response has more tokens"),
}


def _met(value: float | None, target) -> bool | None:
    if target is None or value is None or not np.isfinite(value):
        return None
    op, bound = target
    return bool(value >= bound) if op == ">=" else bool(value <= bound)


def world_card(pipe, k: float = 0.3, top: int = 5) -> tuple[dict[str, Any], Any]:
    """The card of ``pipe``'s world and its default oracles (seeds of ``pipe.config``): a record per key
    (``value``, ``target``, ``met``, ``paper_scale``, ``measures``, ``per_seed``) and the tokens the
    oracles' selection keeps most often per side (a frame)."""
    import pandas as pd
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from sepo.analysis import selected_tokens, token_agreement
    from sepo.oracle import load_scored
    from sepo.pipeline import relative

    pairs = load_from_disk(pipe.data_path("id"))
    rows = [r for split in pairs for r in pairs[split]]
    tokenizer = AutoTokenizer.from_pretrained(str(pipe.world.tokenizer_path))
    limit = pipe.world.config.max_new_tokens
    lengths = [len(tokenizer(r[side], add_special_tokens=False)["input_ids"]) for r in rows for side in ("chosen", "rejected")]
    values: dict[str, list[float]] = {key: [] for key in CARD}
    values["label_agreement"] = [float(np.mean([r["chosen_gold"] > r["rejected_gold"] for r in rows]))]
    values["cutoff_share"] = [float(np.mean([n >= limit for n in lengths]))]
    runs, kept = [], []
    for seed in pipe.config.seeds:
        oracle_dir, metrics = pipe.oracle(seed)
        scored = load_scored(str(oracle_dir))
        runs.append(relative(oracle_dir))
        values["oracle_heldout_accuracy"].append(metrics.get("eval/rewards/accuracies", float("nan")))
        values["target_pair_accuracy"].append(metrics.get("scores/pair_accuracy", float("nan")))
        values["spearman_chosen"].append(token_agreement(scored, k=k, seed=seed)["chosen/spearman"])
        sides = [scored[c] for c in ("chosen_ids", "rejected_ids")]
        tokens = [t for side in sides for ids in side for t in ids]
        values["mean_response_tokens"].append(float(np.mean([len(ids) for side in sides for ids in side])))
        eos_id = tokenizer.eos_token_id
        values["eos_share"].append(float(np.mean([t == eos_id for t in tokens])))
        values["chosen_longer_share"].append(float(np.mean([len(w) > len(l) for w, l in zip(*sides)])))
        kept.append(selected_tokens(scored, tokenizer, k=k, top=top).assign(seed=seed))
    card: dict[str, Any] = {}
    for key, (target, paper, measures) in CARD.items():
        value = float(np.mean(values[key])) if values[key] else None
        card[key] = {"value": value, "target": f"{target[0]} {target[1]}" if target else None, "met": _met(value, target),
                     "paper_scale": paper, "measures": measures, "per_seed": values[key]}
    card["oracle_runs"] = runs
    return card, pd.concat(kept, ignore_index=True)


def card_markdown(card: dict[str, Any]) -> str:
    """The card as a markdown table (one row per key)."""
    lines = ["| quantity | value | target | met | at the paper's scale | what it measures |", "| --- | --- | --- | --- | --- | --- |"]
    for key in CARD:
        row = card[key]
        value = "n/a" if row["value"] is None else f"{row['value']:.3f}"
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        lines.append(f"| `{key}` | {value} | {row['target'] or '-'} | {met} | {row['paper_scale']} | {row['measures']} |")
    return "\n".join(lines) + "\n"


def write_card(card: dict[str, Any], kept, out_dir: str | Path) -> Path:
    """``world_card.json`` and ``world_card.md`` (with the selected-token table) in ``out_dir``."""
    from sepo.pipeline import resolve
    from sepo.utils import write_json, write_text

    out = resolve(out_dir)
    write_json(out / "world_card.json", card)
    table = kept.to_markdown(index=False, floatfmt=".3f")
    write_text(out / "world_card.md", "# World card\n\n" + card_markdown(card)
               + "\nTokens the default oracles' selection keeps most often (top-k of chosen, bottom-k of rejected):\n\n"
               + table + "\n")
    return out / "world_card.json"
