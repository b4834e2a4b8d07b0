"""Where a policy step's time goes: ``torch.profiler`` over the steps of ``policy_step.py``'s variants.

    .venv/bin/python benchmarks/profile_step.py --variant {trl_dpo,sepo_full_head,sepo_used_head} --vocab 4000

One warm-up step, then ``--steps`` profiled steps on the same batch, model and ``TrainingArguments``
as the timed benchmark. Prints one JSON line: the step time under the profiler, the operators that
took most of it (self CPU time) and the floating-point work the profiler counts (matrix products),
per step. ``benchmarks/run.py`` runs it once per variant in a fresh process and puts the breakdown
in ``results/performance.md`` beside the step ratios it explains.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

VARIANTS = ("trl_dpo", "sepo_full_head", "sepo_used_head")


def profile(variant: str, vocab: int, prompt_len: int, response_len: int, batch: int, steps: int, k: float, top: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from bench_common import setup_torch, synthetic_pairs
    from policy_step import build_trainer, make_step

    setup_torch()
    pairs = synthetic_pairs(batch, vocab, prompt_len, response_len, seed=0)
    with tempfile.TemporaryDirectory() as out_dir:
        step = make_step(build_trainer(variant, pairs, vocab, prompt_len + response_len, batch, out_dir, k))
        step()  # warm-up
        with torch_profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                step()
            seconds = (time.perf_counter() - start) / steps
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {
        "variant": variant, "vocab": vocab, "step_seconds": seconds,
        "matmul_gflop_per_step": sum(e.flops for e in events) / steps / 1e9,
        "top_ops": [{"op": e.key, "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps,
                     "ms_per_step": e.self_cpu_time_total / steps / 1e3} for e in ranked],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--response-len", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (after one warm-up step)")
    parser.add_argument("--k", type=float, default=0.3, help="SePO's selected fraction of each response")
    parser.add_argument("--top", type=int, default=12, help="operators listed")
    args = parser.parse_args()
    print(json.dumps(profile(args.variant, args.vocab, args.prompt_len, args.response_len, args.batch, args.steps,
                             args.k, args.top)))


if __name__ == "__main__":
    main()
