"""Paper-scale compute of SePO vs DPO, from FLOP formulas (an estimate, not a measurement).

Per token of a sequence of ``n_ctx`` tokens, a forward pass costs (Kaplan et al., 2020)::

    C_fwd(N) = 2 N + 2 n_layer n_ctx d_model        (N = parameters, embeddings excluded, head included)

and a training pass (forward + backward) 3 C_fwd. Over the same preference data (D tokens: chosen and
rejected sequences of every pair)::

    DPO  = D [3 C_fwd(P) + C_fwd(P)]                                       policy train + reference forward
    SePO = D [f (3 C_fwd(O) + C_fwd(O))  +  2 C_fwd(O)  +  3 C_fwd'(P)]     oracle DPO on a fraction f
                                                                            + oracle and reference scoring
                                                                            + reference-free policy training

where ``C_fwd'(P)`` removes the LM head (``2 d V`` per token) at the positions the loss does not read
(a fraction ``1 - u``, ``u`` = selected tokens / all tokens). The SFT model both start from is not
counted (shared). Memory is not in the formula: SePO also frees the reference model's weights.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Arch:
    name: str
    params: float  # without input embeddings, with the LM head
    n_layer: int
    d_model: int
    vocab: int


# public architecture figures (Pythia: EleutherAI model cards; TinyLlama, LLaMA-2: their configs)
ARCHS = {
    "Pythia-410M": Arch("Pythia-410M", 405e6 - 50304 * 1024, 24, 1024, 50304),
    "Pythia-1.4B": Arch("Pythia-1.4B", 1.41e9 - 50304 * 2048, 24, 2048, 50304),
    "TinyLlama-1.1B": Arch("TinyLlama-1.1B", 1.10e9 - 32000 * 2048, 22, 2048, 32000),
    "Pythia-2.8B": Arch("Pythia-2.8B", 2.78e9 - 50304 * 2560, 32, 2560, 50304),
    "Pythia-6.9B": Arch("Pythia-6.9B", 6.86e9 - 50432 * 4096, 32, 4096, 50432),
    "LLaMA2-7B": Arch("LLaMA2-7B", 6.74e9 - 32000 * 4096, 32, 4096, 32000),
    "LLaMA2-13B": Arch("LLaMA2-13B", 13.0e9 - 32000 * 5120, 40, 5120, 32000),
}

# (oracle, policy) pairs of the paper's settings
PAIRS = (("Pythia-410M", "Pythia-2.8B"), ("Pythia-410M", "Pythia-6.9B"), ("Pythia-1.4B", "Pythia-6.9B"),
         ("TinyLlama-1.1B", "TinyLlama-1.1B"), ("TinyLlama-1.1B", "LLaMA2-7B"), ("TinyLlama-1.1B", "LLaMA2-13B"))


def forward_flops(arch: Arch, n_ctx: int, head_fraction: float = 1.0) -> float:
    """FLOPs per token of one forward pass; ``head_fraction`` of the positions run the LM head."""
    head = 2 * arch.d_model * arch.vocab
    return 2 * arch.params + 2 * arch.n_layer * n_ctx * arch.d_model - (1 - head_fraction) * head


def dpo_flops(policy: Arch, n_ctx: int) -> float:
    return 3 * forward_flops(policy, n_ctx) + forward_flops(policy, n_ctx)


def sepo_flops(oracle: Arch, policy: Arch, n_ctx: int, oracle_fraction: float, used_fraction: float) -> dict[str, float]:
    parts = {
        "oracle_dpo": oracle_fraction * dpo_flops(oracle, n_ctx),
        "scoring": 2 * forward_flops(oracle, n_ctx),
        "policy": 3 * forward_flops(policy, n_ctx, head_fraction=used_fraction),
    }
    parts["total"] = sum(parts.values())
    return parts


def estimate_table(n_ctx: int = 2048, oracle_fractions: tuple[float, ...] = (0.1, 0.5), k: float = 0.3,
                   response_share: float = 0.5) -> list[dict]:
    """Rows of SePO / DPO compute per (oracle, policy) pair; ``used_fraction = k * response_share``."""
    rows = []
    for oracle_name, policy_name in PAIRS:
        oracle, policy = ARCHS[oracle_name], ARCHS[policy_name]
        dpo = dpo_flops(policy, n_ctx)
        row = {"oracle": oracle_name, "policy": policy_name, "dpo_flops_per_token": dpo}
        for f in oracle_fractions:
            sepo = sepo_flops(oracle, policy, n_ctx, f, k * response_share)
            row[f"sepo_over_dpo_f{f}"] = sepo["total"] / dpo
            row[f"parts_f{f}"] = {name: value / dpo for name, value in sepo.items()}
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# GPU hours of each paper-tier notebook (configs/paper/<notebook>.yaml): an estimate, from the same formulas
# --------------------------------------------------------------------------------------------
# Size names of configs/paper/base.yaml -> architectures
SIZE_ARCH = {"pythia-410m": "Pythia-410M", "pythia-1.4b": "Pythia-1.4B", "pythia-2.8b": "Pythia-2.8B",
             "pythia-6.9b": "Pythia-6.9B", "tinyllama-1.1b": "TinyLlama-1.1B", "llama2-7b-chat": "LLaMA2-7B",
             "llama2-13b-chat": "LLaMA2-13B"}
DATA_PAIRS = {"HuggingFaceH4/ultrafeedback_binarized": 61_135,   # train_prefs rows (public dataset card)
              "trl-lib/hh-rlhf-helpful-base": 43_835}            # HH-RLHF helpful-base train rows
# Assumptions (not measured here; change them to your data and hardware):
TOKENS_PER_SEQUENCE = 500      # mean prompt + response tokens of one UltraFeedback sequence after the filters
RESPONSE_SHARE = 0.5           # share of a sequence's tokens in the response (SePO's LM head runs on k of them)
PEAK_FLOPS = 312e12            # A100 / H100-class bf16 dense peak per GPU (A100: 312 TFLOP/s)
TRAIN_MFU = 0.35               # model FLOP utilisation of ZeRO-3 training and scoring
GENERATION_MFU = 0.02          # sampling is memory-bound: a small fraction of peak
GENERATED_TOKENS = 400         # mean tokens per sampled answer
BENCHMARK_PROMPTS = {"alpaca_eval": 805, "arena_hard": 500, "mt_bench": 160}  # MT-Bench: 80 questions x 2 turns


def _paper_parameters(path) -> dict:
    import yaml
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    own = yaml.safe_load(Path(path).read_text())
    base = yaml.safe_load((root / own["experiment"]).read_text())
    return {**base, **own}


def paper_notebook_estimate(path) -> dict:
    """GPU hours of the training, scoring and evaluation runs one paper-tier notebook asks for (its YAML's sweep
    over the runs of :mod:`sepo.tables`), with the assumptions above."""
    from pathlib import Path

    c = _paper_parameters(path)
    name = Path(path).stem.removesuffix("_pythia")
    paper, seeds = c["paper"], len(c["seeds"])
    pairs = DATA_PAIRS.get(paper["data"], 61_135)
    oracle_pairs, target_pairs = paper["oracle_share"] * pairs, (1 - paper["oracle_share"]) * pairs
    tokens = lambda n: 2 * n * TOKENS_PER_SEQUENCE  # chosen and rejected sequences  # noqa: E731
    arch = lambda size: ARCHS[SIZE_ARCH[size]]  # noqa: E731
    flops = {"train": 0.0, "eval": 0.0}
    evaluated: set = set()

    def oracle(size, fraction=c["oracle_fraction"], scored=target_pairs):
        o = arch(size)
        flops["train"] += fraction * oracle_pairs * 2 * TOKENS_PER_SEQUENCE * dpo_flops(o, c["max_length"])
        flops["train"] += tokens(scored) * 2 * forward_flops(o, c["max_length"])

    def policy(method, size, reference=None, n=target_pairs, epochs=c["policy_epochs"], k=0.3):
        p = arch(size)
        if method.startswith("SePO"):
            per_token = 3 * forward_flops(p, c["max_length"], head_fraction=k * RESPONSE_SHARE)
        elif method in ("DPO", "IPO", "Selective-DPO"):
            per_token = 3 * forward_flops(p, c["max_length"]) + forward_flops(arch(reference or size), c["max_length"])
        else:  # SimPO, RRHF: reference-free, every token
            per_token = 3 * forward_flops(p, c["max_length"])
        flops["train"] += epochs * tokens(n) * per_token
        evaluate(size)

    def evaluate(size, benchmarks=tuple(paper["benchmarks"]), sft=True):
        p = arch(size)
        for benchmark in benchmarks:
            prompts = min(c["eval_prompts"], BENCHMARK_PROMPTS[benchmark])
            # sampling the policy, and its SFT model once per size; KL: a forward pass of both on the samples
            models = 1 + (sft and (size, benchmark) not in evaluated)
            evaluated.add((size, benchmark))
            sample = models * prompts * GENERATED_TOKENS * 2 * p.params
            flops["eval"] += sample / GENERATION_MFU * TRAIN_MFU + 2 * prompts * GENERATED_TOKENS * 2 * p.params

    for _ in range(seeds):
        if name == "02_oracle":
            for f in c["fractions"]:
                oracle(c["oracle_size"], fraction=f)
                if c["train_policies"]:
                    policy("SePO", c["policy_size"])
            for size in [s for s in c.get("curve_sizes", []) if s != c["oracle_size"]] if _ == 0 else []:
                for f in c["fractions"]:  # the accuracy curve's other sizes (its oracle_size runs are the sweep's)
                    oracle(size, fraction=f)
        elif name == "04_main_table":
            oracle(c["oracle_size"])
            evaluate(c["policy_size"], sft=True)
            for m in c["methods"]:
                policy(m, c["policy_size"])
        elif name == "05_ablations":
            oracle(c["oracle_size"])
            for beta in c["oracle_betas"]:
                oracle(c["oracle_size"])
            for k in c["ks"]:
                policy("SePO", c["policy_size"], k=k)
            for k in c["k_ls"]:
                policy("SePO", c["policy_size"], k=(0.3 + k) / 2)  # k_w = 0.3: the head runs on both sides' mean
            for _ in list(c["gammas"]) + list(c["oracle_betas"]) + list(c["masses"]):
                policy("SePO", c["policy_size"])
        elif name == "06_weak_to_strong":
            for o in c["oracle_sizes"]:
                oracle(o)
                for p in c["policy_sizes"]:
                    policy("SePO", p)
            for p in c["policy_sizes"]:
                policy("DPO", p)
        elif name == "07_ood_overoptimization":
            ood = DATA_PAIRS.get(paper.get("ood_data", ""), 43_835)
            oracle(c["oracle_size"], scored=ood)
            for m in c["methods"]:
                policy(m, c["policy_size"], n=ood, epochs=c["frontier_epochs"])
        elif name == "08_selective_dpo":
            policy("DPO", c["strong_size"])
            for reference in (c["policy_size"], c["strong_size"]):
                for _ in c["ks"]:
                    policy("Selective-DPO", c["policy_size"], reference=reference)
            policy("DPO", c["policy_size"])
        elif name == "10_benchmarks":
            if c["policy_method"].startswith("SePO"):
                oracle(c["oracle_size"])
            policy(c["policy_method"], c["policy_size"])
        else:
            raise ValueError(f"no estimate for notebook {name}")
    hours = {part: value / (PEAK_FLOPS * TRAIN_MFU) / 3600 for part, value in flops.items()}
    return {"notebook": Path(path).name, "train_gpu_hours": hours["train"], "eval_gpu_hours": hours["eval"],
            "gpu_hours": hours["train"] + hours["eval"]}


def paper_estimates() -> list[dict]:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "configs" / "paper"
    return [paper_notebook_estimate(path) for path in sorted(root.glob("[0-9][0-9]_*.yaml"))]


def hours_text(row: dict) -> str:
    """How a paper YAML's header states its estimate."""
    return f"~{row['gpu_hours']:.0f} GPU hours (A100-class; training {row['train_gpu_hours']:.0f}, evaluation {row['eval_gpu_hours']:.0f})"


if __name__ == "__main__":
    import sys

    if "--paper" in sys.argv:
        print("GPU hours per paper-tier notebook (an estimate; assumptions at the top of this section):")
        for row in paper_estimates():
            print(f"{row['notebook']:32s} {hours_text(row)}")
    else:
        for row in estimate_table():
            print(row["oracle"], "->", row["policy"], {k: round(v, 3) for k, v in row.items() if k.startswith("sepo_")})
