"""The reproduction's workloads of two checkouts, timed side by side on one machine.

Each checkout runs its own code with its own reproduction settings (``configs/mini/base.yaml``) over its own
cached world (build it first, e.g. with a cold ``make reproduce``): one oracle run (DPO training of the small
model, its evaluation and the scoring of the target pairs), one policy run per loss family (DPO: with a
reference; SePO: reference-free on that oracle's scores), and the evaluation sampling of the medium SFT model
(128 prompts x 2 samples, 48 new tokens, the checkout's ``eval_batch_size``). Every measurement is a fresh
process on one thread (as the reproduction runs a notebook), one at a time, the two checkouts alternating
within each round; each stage call is timed inside its process, into a temporary directory (the caches are
only read). Ratios are taken within a round.

``python benchmarks/workloads_side_by_side.py --base DIR --base-cache DIR --new DIR --new-cache DIR
[--rounds 2] [--write results/workloads_side_by_side.json] [--report results/performance.md]`` prints one JSON
document (writes it, and puts section 7 of the performance report in place; ``make bench`` shows the recorded
comparison in the same section).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

DRIVER = r"""
import json, sys, tempfile, time
from pathlib import Path
root, cache, what = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.path.insert(0, str(root))
import torch
from sepo.methods import method
from sepo.pipeline import ExperimentConfig, Pipeline
p = Pipeline(ExperimentConfig.from_yaml(root / "configs" / "mini" / "base.yaml", cache_dir=cache, threads=1))
oracle_dir = p.oracle(0)[0]  # the cached oracle: SePO's scores
with tempfile.TemporaryDirectory() as tmp:
    p.cache = Path(tmp)
    if what == "sampling":
        from sepo.generation import sample_responses
        from sepo.trainer import load_causal_lm, load_tokenizer
        sft = p.sft_path(p.config.policy_size)
        tokenizer, model = load_tokenizer(sft, "sft"), load_causal_lm(sft, "sft")
        prompts = p.world.eval_prompts("id")[: p.config.eval_prompts]
        start = time.perf_counter()
        sample_responses(model, tokenizer, prompts, num_samples=p.config.eval_samples,
                         max_new_tokens=p.config.max_new_tokens, seed=0, batch_size=p.config.eval_batch_size)
    elif what == "oracle":
        start = time.perf_counter()
        p.oracle(0)
    else:
        recipe = method({"policy/dpo": "DPO", "policy/sepo": "SePO"}[what])
        start = time.perf_counter()
        p.policy(recipe, 0, data=oracle_dir if recipe.needs_selection else None, snapshots=True)
    print(json.dumps({"seconds": time.perf_counter() - start}))
"""

WORKLOADS = ("oracle", "policy/dpo", "policy/sepo", "sampling")
KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "SEPO_QUIET": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}


def time_once(checkout: Path, cache: Path, what: str) -> float:
    """Seconds of one workload's stage call in a fresh process of ``checkout``'s own virtual environment."""
    import os

    python = checkout / ".venv" / "bin" / "python"
    done = subprocess.run([str(python), "-c", DRIVER, str(checkout), str(cache), what], capture_output=True, text=True,
                          env={**os.environ, **KERNELS}, check=False)
    if done.returncode:
        raise SystemExit(f"{checkout} {what}: failed\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


SECTION = "## 7."


def side_by_side_section(out: dict) -> list[str]:
    """Section 7 of ``results/performance.md``: the recorded side-by-side timing of two checkouts' workloads."""
    if not out:
        return [f"{SECTION} The reproduction's workloads, older code against this code", "",
                "Not recorded: `.venv/bin/python benchmarks/workloads_side_by_side.py --base DIR --base-cache DIR --new . "
                "--new-cache cache --write results/workloads_side_by_side.json --report results/performance.md`.", ""]
    commits = out["commits"]
    lines = [f"{SECTION} The reproduction's workloads, older code against this code", "",
             f"Commit `{commits['base']}` against `{commits['new']}`, each with its own code and reproduction settings "
             f"(`configs/mini/base.yaml`) over its own cached world, in fresh one-thread processes alternating within each "
             f"of {out['rounds']} rounds (`benchmarks/workloads_side_by_side.py`, record in "
             "`results/workloads_side_by_side.json`). Speed-up: older seconds / newer seconds within a round, median "
             "(range).", "",
             "| workload | older s | newer s | speed-up |", "| --- | --- | --- | --- |"]
    for what, row in out["workloads"].items():
        low, high = row["speedup_range"]
        lines.append(f"| {what} | {row['base_seconds']:.2f} | {row['new_seconds']:.2f} | "
                     f"{row['speedup']:.2f}x ({low:.2f}-{high:.2f}) |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="checkout of the older code (with its .venv)")
    parser.add_argument("--base-cache", required=True)
    parser.add_argument("--new", required=True, help="checkout of the newer code (with its .venv)")
    parser.add_argument("--new-cache", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", default="", help="also write the result to this JSON file")
    parser.add_argument("--report", default="", help="also put the result into this performance report (section 7)")
    args = parser.parse_args()
    sides = {"base": (Path(args.base), Path(args.base_cache)), "new": (Path(args.new), Path(args.new_cache))}
    labels = {name: subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                                   text=True).stdout.strip() for name, (path, _) in sides.items()}
    seconds = {what: {name: [] for name in sides} for what in WORKLOADS}
    for _ in range(args.rounds):
        for what in WORKLOADS:
            for name, (checkout, cache) in sides.items():
                seconds[what][name].append(time_once(checkout, cache, what))
    out = {"commits": labels, "rounds": args.rounds, "threads": 1, "workloads": {}}
    for what, by in seconds.items():
        ratios = [b / n for b, n in zip(by["base"], by["new"])]
        out["workloads"][what] = {"base_seconds": statistics.median(by["base"]), "new_seconds": statistics.median(by["new"]),
                                  "speedup": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)],
                                  "all": by}
    from stage_split import publish

    publish(out, args.write, args.report, SECTION, side_by_side_section(out))


if __name__ == "__main__":
    sys.exit(main())
