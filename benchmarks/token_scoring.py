"""Token-scoring throughput, timed in a fresh process: response tokens scored per second.

Variants, all on the same pairs, oracle and reference (two 4-layer d=256 Llamas):

* ``floor``     the bare forward passes ``model(input_ids, attention_mask)`` of oracle and reference on
                the batches our scorer builds (length-sorted, ``batch`` pairs = 2*batch sequences): the
                least any scorer that runs both models on every sequence can cost on a CPU;
* ``ours``      :func:`sepo.scoring.token_rewards` (LM heads only at response positions), then
                :func:`sepo.selectors.select_from_scores` (SePO top/bottom k), timed separately;
* ``official``  a re-implementation of the released SePO scoring loop: one sequence at a time, full
                logits and a full-vocabulary ``log_softmax`` per model, the rewards moved to host
                memory, then a Python loop of ``argmax`` calls, one per selected token.

Prints one JSON line, a list with one result per response length: seconds (median, spread), tokens/s.
"""

from __future__ import annotations

import argparse
import json

VARIANTS = ("floor", "ours", "official")


def official_scores(oracle, reference, pairs: list[dict], k: float) -> list[tuple[list[float], list[int]]]:
    """Per response: its token rewards and the indices an argmax loop picks (chosen: highest, rejected: lowest)."""
    import torch

    out = []
    for pair in pairs:
        for side in ("chosen_ids", "rejected_ids"):
            prompt, response = pair["prompt_ids"], pair[side]
            ids = torch.tensor([prompt + response])  # (1, T)
            start = len(prompt) - 1  # log-prob position of the first response token
            logps = []
            for model in (oracle, reference):
                logits = model(input_ids=ids).logits  # (1, T, V)
                full = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (1, T-1, V): every vocabulary entry
                logps.append(full.gather(-1, ids[:, 1:, None])[0, start:, 0])  # (n,)
            rewards = (logps[0] - logps[1]).cpu()  # the released code moves rewards to host memory here
            sign = 1.0 if side == "chosen_ids" else -1.0
            remaining = sign * rewards.clone()
            picked = []
            for _ in range(int(k * len(response))):  # one argmax (and one host sync) per selected token
                index = int(torch.argmax(remaining).item())
                picked.append(index)
                remaining[index] = float("-inf")
            out.append((rewards.tolist(), picked))
    return out


def measure(variant: str, vocab: int, prompt_len: int, response_len: int, pairs_n: int, batch: int, repeats: int,
            k: float) -> dict:
    import torch
    from datasets import Dataset

    from bench_common import setup_torch, summary, synthetic_pairs, tiny_llama, timed
    from sepo.data import build_sequences
    from sepo.scoring import length_sorted_batches, token_rewards
    from sepo.selectors import select_from_scores

    setup_torch()
    max_len = prompt_len + response_len
    oracle, reference = tiny_llama(vocab, max_len, seed=0).eval(), tiny_llama(vocab, max_len, seed=1).eval()
    pairs = synthetic_pairs(pairs_n, vocab, prompt_len, response_len, seed=0)
    dataset = Dataset.from_dict({key: [p[key] for p in pairs] for key in ("prompt_ids", "chosen_ids", "rejected_ids")})
    tokens = sum(len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)
    select_seconds: list[float] = []

    def floor() -> None:
        lengths = [len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) for p in pairs]
        with torch.inference_mode():
            for group in length_sorted_batches(lengths, batch):
                enc = build_sequences([pairs[i]["prompt_ids"] for i in group] * 2,
                                      [pairs[i]["chosen_ids"] for i in group] + [pairs[i]["rejected_ids"] for i in group], 0)
                for model in (oracle, reference):
                    model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])

    def ours() -> None:
        scores = token_rewards(oracle, reference, dataset, beta=1.0, batch_size=batch, pad_id=0)
        select_seconds.extend(timed(lambda: select_from_scores(scores["chosen_scores"], scores["rejected_scores"],
                                                               "topk", k_w=k, k_l=k), 1, 0))

    def official() -> None:
        with torch.inference_mode():
            official_scores(oracle, reference, pairs, k)

    fn = {"floor": floor, "ours": ours, "official": official}[variant]
    seconds = timed(fn, repeats, warmup=1)
    result = {"variant": variant, "vocab": vocab, "prompt_len": prompt_len, "response_len": response_len,
              "pairs": pairs_n, "batch": batch, "tokens": tokens, "seconds": summary(seconds),
              "tokens_per_second": tokens / summary(seconds)["median"], "threads": torch.get_num_threads()}
    if select_seconds:
        result["select_seconds"] = summary(select_seconds[1:] or select_seconds)  # without the warm-up call
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--response-len", default="96", help="response tokens; a comma list measures each in turn")
    parser.add_argument("--pairs", type=int, default=32, help="pairs scored per timed pass")
    parser.add_argument("--batch", type=int, default=8, help="pairs per batch (our scorer and the floor)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over all pairs (after one warm-up)")
    parser.add_argument("--k", type=float, default=0.3, help="selected fraction of each response")
    args = parser.parse_args()
    lengths = [int(x) for x in args.response_len.split(",")]
    print(json.dumps([measure(args.variant, args.vocab, args.prompt_len, n, args.pairs, args.batch, args.repeats, args.k)
                      for n in lengths]))


if __name__ == "__main__":
    main()
