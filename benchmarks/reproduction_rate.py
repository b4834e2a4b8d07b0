"""One stage of the mini-world reproduction, timed, with its FLOPs: how close it runs to the matmul rate.

``--what`` picks the workload, each run exactly as the reproduction runs it (``sepo.pipeline.Pipeline``
with the reproduction's settings, ``configs/mini/base.yaml``), fresh (into ``--out-dir``, never the cache):

* ``world``: builds the cached world (and its SFT models) the other workloads read, untimed: run first, so that
  no timed workload pays for a cold cache;
* ``matmul``: the machine's fp32 and bf16 matrix-product rate (``F.linear``) at the mini models' shapes, on
  ``--threads`` threads;
* ``oracle``: one oracle run (DPO training of the small model, evaluation, scoring of the train split);
* ``policy``: one policy run of ``--loss`` (``dpo``: with a reference; ``simpo`` / ``sepo``: reference-free;
  ``sepo`` trains on the scores of the oracle run in ``--oracle-dir``);
* ``scoring``: token scoring of the train split (``sepo.scoring.token_rewards``, oracle = reference = small SFT);
* ``sampling``: evaluation sampling (``sepo.generation.sample_responses``: 128 prompts x 2 samples, 48 new
  tokens, ``eval_batch_size`` prompts a batch, the medium SFT model).

``--threads`` sets the workload's torch threads (``ExperimentConfig.threads``; the reproduction uses one per
process and runs two notebooks side by side on two cores, which ``run.py`` measures by starting two of the
same workload at once). With ``--count-flops`` the workload runs a second time (untimed, into another directory) under
``torch.utils.flop_counter.FlopCounterMode``: matrix products and attention (the CPU flash-attention
kernels counted as full, non-causal ``QK^T`` and ``AV`` products), forward and backward. The count is
deterministic, so ``run.py`` takes it once and divides it by every round's time. ``seconds`` is the timed call
alone (the stage as the reproduction calls it: loading, training, saving), never the counting pass or the
interpreter's start-up. For an oracle or policy run the count is also taken inside ``Trainer.train`` alone
(``train_gflop``: the training loop), whose time is the run's own ``train_runtime`` (in ``info``). Prints one JSON
line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ROOT, setup_torch  # noqa: E402

sys.path.insert(0, str(ROOT))


def matmul_rates(shapes: list[tuple[int, int, int]], seconds: float = 0.4) -> list[dict]:
    """GFLOP/s of ``F.linear(x (M, K), w (N, K))`` in float32 and bfloat16 (median of 5 timed blocks)."""
    import statistics

    import torch
    import torch.nn.functional as F

    out = []
    for m, k, n in shapes:
        row = {"shape": [m, k, n]}
        for dtype in (torch.float32, torch.bfloat16):
            x, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
            for _ in range(3):
                F.linear(x, w)
            start, reps = time.perf_counter(), 0
            while time.perf_counter() - start < 0.05:
                F.linear(x, w)
                reps += 1
            reps = max(1, int(reps * seconds / 5 / 0.05))
            blocks = []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(reps):
                    F.linear(x, w)
                blocks.append((time.perf_counter() - start) / reps)
            row[str(dtype).replace("torch.", "")] = 2 * m * k * n / statistics.median(blocks) / 1e9
        out.append(row)
    return out


def linear_shapes(size: str, tokens: int, vocab: int) -> list[tuple[tuple[int, int, int], int]]:
    """The (M, K, N) shapes of a mini model's linear layers at ``tokens`` rows, each with its count per forward."""
    from sepo.world.models import MODEL_SIZES

    hidden, layers, _ = MODEL_SIZES[size]
    inner = 8 * round(hidden * 8 / 3 / 8)
    return [((tokens, hidden, hidden), 4 * layers), ((tokens, hidden, inner), 2 * layers),
            ((tokens, inner, hidden), layers), ((tokens, hidden, vocab), 1)]


def model_matmul_rates(spec: str) -> dict:
    """Matmul rates: ``spec`` = ``size:tokens,...`` (a model's linear layers, mixed by FLOPs) or ``M:K:N`` shapes."""
    out = {}
    for item in spec.split(","):
        parts = item.split(":")
        if len(parts) == 3:
            row = matmul_rates([tuple(int(v) for v in parts)])[0]
            out[item] = {"float32": row["float32"], "bfloat16": row["bfloat16"]}
            continue
        size, tokens = parts[0], int(parts[1])
        shapes = linear_shapes(size, tokens, vocab=1024)
        rows = matmul_rates([s for s, _ in shapes])
        mix = {}
        for dtype in ("float32", "bfloat16"):  # all layers' FLOPs over all layers' time
            flops = [2 * m * k * n * count for (m, k, n), count in shapes]
            mix[dtype] = sum(flops) / sum(f / (r[dtype] * 1e9) for f, r in zip(flops, rows)) / 1e9
        out[item] = mix
    return out


def flop_counter():
    """``FlopCounterMode`` that also counts the CPU flash-attention kernels (not in torch's registry)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def forward(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, query, key, value)

    return FlopCounterMode(display=False, custom_mapping={aten._scaled_dot_product_flash_attention_for_cpu: forward,
                                                          aten._scaled_dot_product_flash_attention_for_cpu_backward: backward})


def count_flops(call) -> tuple[float, float | None]:
    """GFLOP of ``call()`` and of the part inside ``transformers.Trainer.train`` (the training loop: steps,
    optimizer, snapshot saves), or None if it trains nothing."""
    import transformers

    train, inside = transformers.Trainer.train, []
    with flop_counter() as counter:
        def counted_train(self, *args, **kwargs):
            before = counter.get_total_flops()
            try:
                return train(self, *args, **kwargs)
            finally:
                inside.append(counter.get_total_flops() - before)

        transformers.Trainer.train = counted_train
        try:
            call()
        finally:
            transformers.Trainer.train = train
    return counter.get_total_flops() / 1e9, (sum(inside) / 1e9 if inside else None)


def pipeline(world: str, out_dir: Path, threads: int):
    """The reproduction's pipeline over the cached world, with the reproduction's settings
    (``configs/mini/base.yaml``), writing its runs under ``out_dir``."""
    from sepo.pipeline import ExperimentConfig, Pipeline

    p = Pipeline(ExperimentConfig.from_yaml(ROOT / "configs" / "mini" / "base.yaml", world=world, cache_dir=str(ROOT / "cache"),
                                            threads=threads))
    p.cache = out_dir  # the world stays the cached one; every stage run is fresh
    return p


def workload(args, p, out_dir: Path):
    """A callable doing one workload once into ``out_dir``, and a description of it."""
    from sepo.methods import method

    if args.what == "oracle":
        def run():
            p.cache = out_dir
            run_dir, _ = p.oracle(seed=0)
            return json.loads((run_dir / "timing.json").read_text())
        return run
    if args.what == "policy":
        recipe = method({"dpo": "DPO", "simpo": "SimPO", "sepo": "SePO", "ipo": "IPO"}[args.loss])

        def run():
            p.cache = out_dir
            run_dir, _ = p.policy(recipe, seed=0, data=args.oracle_dir if recipe.needs_selection else None)
            return json.loads((run_dir / "timing.json").read_text())
        return run
    if args.what == "scoring":
        from sepo.oracle import OracleConfig, _tokenize
        from sepo.scoring import token_rewards
        from sepo.trainer import load_causal_lm, load_preferences, load_tokenizer

        sft = p.sft_path(p.config.oracle_size)
        tokenizer = load_tokenizer(sft, "sft")
        config = OracleConfig(reference_path=sft, data_path=p.data_path(), output_dir=str(out_dir), max_length=128,
                              max_prompt_length=32)
        data, _ = _tokenize(config, load_preferences(p.data_path(), "train"), tokenizer, "target", p.data_path())
        oracle, reference = load_causal_lm(sft, "oracle"), load_causal_lm(sft, "reference")

        def run():
            token_rewards(oracle, reference, data, beta=0.1, batch_size=32, pad_id=tokenizer.pad_token_id)
            return {"tokens": sum(len(x) for c in ("prompt_ids", "chosen_ids", "rejected_ids") for x in data[c])}
        return run
    if args.what == "sampling":
        from sepo.generation import sample_responses
        from sepo.trainer import load_causal_lm, load_tokenizer

        sft = p.sft_path(p.config.policy_size)
        tokenizer, model = load_tokenizer(sft, "sft"), load_causal_lm(sft, "sft")
        prompts = p.world.eval_prompts("id")[: p.config.eval_prompts]

        def run():
            out = sample_responses(model, tokenizer, prompts, num_samples=p.config.eval_samples,
                                   max_new_tokens=p.config.max_new_tokens, seed=0, batch_size=p.config.eval_batch_size)
            return {"sampled_tokens": sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for r in out for t in r)}
        return run
    raise SystemExit(f"unknown --what {args.what!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", required=True, choices=("world", "matmul", "oracle", "policy", "scoring", "sampling"))
    parser.add_argument("--loss", default="dpo")
    parser.add_argument("--world", default="default")
    parser.add_argument("--oracle-dir", default="", help="oracle run whose scores a sepo policy trains on")
    parser.add_argument("--out-dir", default="", help="where the runs go (default: a temporary directory)")
    parser.add_argument("--count-flops", type=int, default=0)
    parser.add_argument("--shapes", default="", help="matmul: size:tokens (a model's linear layers) or M:K:N, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the reproduction: 1 per process)")
    args = parser.parse_args()
    setup_torch(args.threads)
    if args.what == "matmul":
        print(json.dumps(model_matmul_rates(args.shapes)))
        return
    if args.what == "world":
        start = time.perf_counter()
        world = pipeline(args.world, ROOT / "cache", args.threads).world
        print(json.dumps({"seconds": time.perf_counter() - start, "world": world.root.name}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.out_dir) if args.out_dir else Path(tmp)
        p = pipeline(args.world, base / "timed", args.threads)
        run = workload(args, p, base / "timed")
        start = time.perf_counter()
        info = run()
        seconds = time.perf_counter() - start
        result = {"seconds": seconds, "info": info}
        if args.count_flops:
            result["gflop"], result["train_gflop"] = count_flops(workload(args, p, base / "counted"))
        print(json.dumps(result))


if __name__ == "__main__":
    main()
