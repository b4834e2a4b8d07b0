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


if __name__ == "__main__":
    for row in estimate_table():
        print(row["oracle"], "->", row["policy"], {k: round(v, 3) for k, v in row.items() if k.startswith("sepo_")})
