"""Peak memory of per-token log-probs: naive ``gather(log_softmax)`` vs ``sepo.logprobs``.

Each variant runs in its own fresh process; the figure is the rise of the process's peak resident
memory (``ru_maxrss``) during the call, over the peak reached after building the model and inputs.
Run: ``.venv/bin/python benchmarks/logprobs_memory.py [--vocab 32000] [--batch 8] [--seq 128]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

VARIANTS = ("naive", "selective", "selective_head_at_positions")


def measure(variant: str, vocab: int, batch: int, seq: int, hidden: int, selected: float) -> dict:
    import resource
    import time

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sepo.logprobs import naive_token_logps, token_logps

    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=seq)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, vocab, (batch, seq))
    mask = torch.ones_like(ids)
    positions = torch.rand(batch, seq - 1) < selected
    with torch.inference_mode():  # warm-up (allocator pools, lazy init), then reset nothing: ru_maxrss is monotone
        model(input_ids=ids[:1, :8])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.inference_mode():
        if variant == "naive":
            out = naive_token_logps(model(input_ids=ids, attention_mask=mask).logits, ids)
        elif variant == "selective":
            out = token_logps(model, ids, mask)
        else:
            out = token_logps(model, ids, mask, positions)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "peak_rise_mib": (after - before) / 1024, "seconds": seconds, "checksum": float(out[positions].sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--selected", type=float, default=0.3, help="fraction of positions the loss uses")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.vocab, args.batch, args.seq, args.hidden, args.selected)))
        return
    rows = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", variant, "--vocab", str(args.vocab), "--batch", str(args.batch),
               "--seq", str(args.seq), "--hidden", str(args.hidden), "--selected", str(args.selected)]
        rows[variant] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    logits_mib = args.batch * args.seq * args.vocab * 4 / 2**20
    print(f"per-token log-probs, vocab {args.vocab}, batch {args.batch} x seq {args.seq}, hidden {args.hidden} "
          f"(one float32 logits tensor = {logits_mib:.0f} MiB)")
    print(f"{'variant':32s} {'peak rise MiB':>14s} {'ratio to naive':>15s} {'seconds':>8s}")
    base = rows["naive"]["peak_rise_mib"]
    for variant, row in rows.items():
        print(f"{variant:32s} {row['peak_rise_mib']:14.0f} {row['peak_rise_mib'] / base:15.2f} {row['seconds']:8.2f}")
    a, b = rows["naive"]["checksum"], rows["selective_head_at_positions"]["checksum"]
    print(f"checksum agreement (sum of log-probs at used positions): naive {a:.3f} vs head-at-positions {b:.3f}")


if __name__ == "__main__":
    main()
