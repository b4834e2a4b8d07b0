"""claims.md gathers every notebook's claim records; missing claims are listed as not measured."""

import json

from sepo.claims import write_claims
from sepo.stats import effect


def test_write_claims_from_metrics(tmp_path):
    record = {"statement": "SePO beats DPO", "effects": [effect("SePO - DPO", [0.1, 0.2, 0.15]).to_dict()],
              "verdict": "holds", "note": "a note"}
    (tmp_path / "04_main_table").mkdir()
    (tmp_path / "04_main_table" / "metrics.json").write_text(json.dumps({"claims": {"C2": record}}))
    text = write_claims(tmp_path).read_text()
    assert "| C2 | SePO beats DPO | **holds** | `results/04_main_table/` |" in text
    assert "| C1 |" in text and "not measured" in text
    assert "- SePO - DPO: +0.150 [" in text and "(+0.100, +0.200, +0.150)" in text


# --------------------------------------------------------------------------------------------
# Verdict rules on small synthetic tables
# --------------------------------------------------------------------------------------------
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from sepo import claims as C  # noqa: E402


def rows(method_rates: dict[str, list[float]], **extra) -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "seed": s, "win_rate": w, **extra} for m, rates in method_rates.items()
                         for s, w in enumerate(rates)])


def test_every_record_uses_the_one_statement_of_its_claim():
    frame = rows({"SePO": [0.6, 0.62, 0.61], "DPO": [0.5, 0.52, 0.49], "SePO-random": [0.55, 0.56, 0.57]})
    for cid, record in C.main_table_claims(frame).items():
        assert record["statement"] == C.STATEMENTS[cid]
    assert set(C.ORDER) == set(C.STATEMENTS)


def test_main_table_verdicts():
    holds = C.main_table_claims(rows({"SePO": [0.6, 0.62, 0.61], "DPO": [0.5, 0.52, 0.49], "SimPO": [0.4, 0.45, 0.41]}))
    assert holds["C2"]["verdict"] == "holds" and [e["n"] for e in holds["C2"]["effects"]] == [3, 3]
    assert holds["R5"]["verdict"] == "holds" and "C2-control" not in holds
    fails = C.main_table_claims(rows({"SePO": [0.2, 0.25, 0.21], "DPO": [0.5, 0.52, 0.49], "SePO-random": [0.4, 0.5, 0.45]}))
    assert fails["C2"]["verdict"] == "does not hold" and fails["R5"]["verdict"] == "does not hold"
    assert fails["C2-control"]["verdict"] == "does not hold"
    mixed = C.main_table_claims(rows({"SePO": [0.5, 0.52, 0.51], "DPO": [0.4, 0.41, 0.42], "IPO": [0.6, 0.61, 0.62]}))
    assert mixed["C2"]["verdict"] == "mixed"
    noisy = C.main_table_claims(rows({"SePO": [0.3, 0.7, 0.5], "DPO": [0.5, 0.5, 0.5]}))
    assert noisy["C2"]["verdict"] == "inconclusive"
    one_seed = C.main_table_claims(rows({"SePO": [0.9], "DPO": [0.1]}))
    assert one_seed["C2"]["verdict"] == "inconclusive"  # one seed: no interval


def test_oracle_fraction_verdict_reads_the_trend_over_every_fraction():
    def table(precision, win):
        return pd.DataFrame([{"fraction": f, "seed": s, "chosen_precision": precision(f, s), "policy_win_rate": win(f, s)}
                             for f in (0.05, 0.2, 1.0) for s in range(3)])

    rising = C.oracle_fraction_claims(table(lambda f, s: 0.2 + f / 2 + 0.01 * s, lambda f, s: 0.5 + f / 10 + 0.003 * s * s))
    assert rising["C6"]["verdict"] == "holds" and rising["C6"]["effects"][0]["n"] == 3
    # precision flat (only seed noise), policies better with more data: parts disagree only if one fails
    flat = C.oracle_fraction_claims(table(lambda f, s: 0.3 + 0.01 * s + 0.001 * (s - 1) * f, lambda f, s: 0.5 + f / 10 + 0.003 * s))
    assert flat["C6"]["verdict"] == "inconclusive"
    # the end points alone (0.31 vs 0.30) would say "holds"; the trend over all three fractions falls
    peak = {0.05: 0.30, 0.2: 0.60, 1.0: 0.31}
    out = C.oracle_fraction_claims(table(lambda f, s: peak[f] + 0.01 * s, lambda f, s: peak[f] + 0.02 * s))
    assert out["C6"]["verdict"] == "does not hold" and out["C6"]["effects"][0]["mean"] < 0


def test_token_reward_verdicts():
    def seed_row(s):
        row = {"seed": s, "chosen/spearman": 0.3 + 0.02 * s}
        for side in ("chosen", "rejected"):
            row.update({f"{side}/oracle_top30": 0.8 + 0.01 * s, f"{side}/gaussian_top30": 0.55, f"{side}/gold_top30": 0.9,
                        f"{side}/precision": 0.5 + 0.01 * s, f"{side}/random_precision": 0.3})
        return row

    frame = pd.DataFrame([seed_row(s) for s in range(3)])
    out = C.token_reward_claims(frame)
    assert out["C1"]["verdict"] == "holds" and out["R1"]["verdict"] == "holds"
    assert "0.90 (chosen)" in out["C1"]["note"]


def test_ablation_verdicts():
    def table(k_rates, k_l_rates=None, gamma_rates=None, mass_rates=None):
        data = []
        for parameter, rates in (("k", k_rates), ("k_l", k_l_rates or {}), ("gamma", gamma_rates or {}),
                                 ("adaptive_mass", mass_rates or {})):
            for value, series in rates.items():
                data += [{"parameter": parameter, "value": value, "seed": s, "win_rate": w} for s, w in enumerate(series)]
        return pd.DataFrame(data)

    rise_fall = table({0.1: [0.4, 0.42, 0.41], 0.3: [0.6, 0.61, 0.63], 1.0: [0.45, 0.44, 0.46]},
                      {0.3: [0.6, 0.61, 0.63], 1.0: [0.5, 0.52, 0.5]}, {1.0: [0.6, 0.61, 0.63], 2.5: [0.5, 0.5, 0.52]},
                      {0.5: [0.65, 0.66, 0.69]})
    out = C.ablation_claims(rise_fall)
    assert out["C3"]["verdict"] == "holds" and len(out["C3"]["effects"]) == 3
    assert out["C3-gamma"]["verdict"] == "holds"  # gamma matters (here a larger gamma is worse)
    assert out["R4"]["verdict"] == "holds"
    monotone = table({0.1: [0.4, 0.42, 0.41], 0.3: [0.5, 0.51, 0.53], 1.0: [0.6, 0.61, 0.62]})
    assert C.ablation_claims(monotone)["C3"]["verdict"] == "mixed"  # rises, does not fall


def w2s_frame(small_large, large_large, dpo_large=0.58):
    return pd.DataFrame(
        [{"method": "SePO", "oracle_size": o, "policy_size": p, "seed": s, "win_rate": w + 0.01 * s}
         for (o, p, w) in (("small", "large", small_large), ("large", "large", large_large), ("small", "small", 0.55))
         for s in range(3)]
        + [{"method": "DPO", "oracle_size": "-", "policy_size": "large", "seed": s, "win_rate": dpo_large} for s in range(3)])


def test_weak_to_strong_verdict():
    record = C.weak_to_strong_claims(w2s_frame(0.6, 0.62), ["small", "large"], ["small", "large"])["C4"]
    assert record["verdict"] == "holds" and record["effects"][1]["mean"] == pytest.approx(-0.02)
    assert record["effects"][3]["mean"] == pytest.approx(0.6 + 0.01 - 0.58)  # against the policy's DPO baseline
    failed = C.weak_to_strong_claims(w2s_frame(0.3, 0.62), ["small", "large"], ["small", "large"])["C4"]
    assert failed["verdict"] == "does not hold"
    # the large oracle's arm fails too: the loss fails whatever the oracle
    confounded = C.weak_to_strong_claims(w2s_frame(0.3, 0.2), ["small", "large"], ["small", "large"])["C4"]
    assert confounded["verdict"] == "confounded" and "fails too" in confounded["note"]


def frontier(points_by_method, seeds=range(3)):
    return pd.DataFrame([{"method": m, "seed": s, "step": step, "kl": kl, "reward": r}
                         for s in seeds for m, points in points_by_method.items() for step, kl, r in points])


def test_ood_verdicts_and_matched_kl():
    frame = rows({"SePO": [0.6, 0.62, 0.61], "DPO": [0.5, 0.52, 0.49]})
    # DPO rises then falls (over-optimizes): the premise holds; SePO is above it where both measured
    curves = frontier({"SePO": [(0, 0.0, 0.0), (10, 2.0, 1.0), (20, 4.0, 1.5)],
                       "DPO": [(0, 0.0, 0.0), (10, 3.0, 0.6), (20, 6.0, 0.9), (30, 9.0, 0.3)]})
    curves.loc[(curves.method == "DPO") & (curves.step == 30), "reward"] += curves.seed * 0.01
    out = C.ood_claims(frame, curves)
    assert set(out) == {"C5"}
    assert out["C5"]["verdict"] == "holds" and out["C5"]["effects"][0]["name"].startswith("premise")
    # overlap of trained checkpoints: [3, 4]; at KL 4: SePO 1.5, DPO 0.6 + (0.9 - 0.6) / 3 = 0.7
    r2 = C.frontier_claims(curves)["R2"]
    assert r2["effects"][0]["mean"] == pytest.approx(0.8) and r2["verdict"] == "holds" and "KL 4.00-4.00" in r2["note"]
    assert C.reward_at_kl(curves[(curves.method == "DPO") & (curves.seed == 0)], 4.5) == pytest.approx(0.75)


def test_ood_premise_not_met_and_kl_not_measured():
    frame = rows({"SePO": [0.6, 0.62, 0.61], "DPO": [0.5, 0.52, 0.49]})
    # DPO's reward keeps rising: no over-optimization to rescue from
    rising = frontier({"SePO": [(0, 0.0, 0.0), (10, 20.0, 1.0), (20, 40.0, 1.5)],
                       "DPO": [(0, 0.0, 0.0), (10, 1.0, 0.6), (20, 2.0, 0.9), (-1, 3.0, 1.2)]})
    rising.loc[rising.step == -1, "reward"] += rising.seed * 0.01
    out = C.ood_claims(frame, rising)
    assert out["C5"]["verdict"] == "premise not met"
    # SePO's checkpoints start at KL 20, DPO's end at 3: interpolating from the SFT point is not a measurement
    r2 = C.frontier_claims(rising)["R2"]
    assert r2["verdict"] == "not measured" and r2["effects"] == [] and "[0, 1, 2]" in r2["note"]


def test_frontier_claims_compare_at_matched_kl_and_report_the_other_methods():
    # SePO below DPO at every shared KL; the gold-credit arm above it
    curves = frontier({"SePO": [(0, 0.0, 0.0), (5, 1.0, 0.2), (-1, 3.0, 0.5)],
                       "DPO": [(0, 0.0, 0.0), (5, 1.5, 0.5), (-1, 4.0, 1.0)],
                       "SePO-gold": [(0, 0.0, 0.0), (5, 2.0, 1.0), (-1, 5.0, 2.0)]})
    curves.loc[curves.method == "SePO", "reward"] -= curves.seed * 0.01
    out = C.frontier_claims(curves)["R2"]
    assert out["verdict"] == "does not hold"
    # at KL 3 (the top of the shared range [1.5, 3]): SePO 0.5 - seed/100, DPO 0.5 + 0.5 * 1.5 / 2.5 = 0.8
    assert out["effects"][0]["mean"] == pytest.approx(0.5 - 0.01 - 0.8)
    gold = out["effects"][1]
    assert gold["name"].endswith("SePO-gold - DPO") and gold["mean"] == pytest.approx(1.0 + (2.0 - 1.0) * 2 / 3 - 1.0)
    assert C.frontier_claims(curves[curves.method != "DPO"]) == {}  # no baseline: nothing to claim


def test_selective_dpo_verdict():
    frame = pd.DataFrame([{"reference": ref, "k": 0.4, "seed": s, "win_rate": w + 0.01 * s}
                          for ref, w in (("weak (policy SFT)", 0.5), ("strong (DPO large)", 0.6)) for s in range(3)]
                         + [{"reference": "-", "k": float("nan"), "seed": s, "win_rate": 0.55} for s in range(3)])
    assert C.selective_dpo_claims(frame, 0.4)["SDPO"]["verdict"] == "holds"


def test_cross_tokenizer_verdict():
    frame = pd.DataFrame([{"oracle": o, "seed": s, "chosen_precision": p + 0.01 * s, "random_precision": 0.3, "win_rate": w}
                          for o, p, w in (("same tokenizer", 0.5, 0.6), ("other tokenizer, carried", 0.28, 0.5)) for s in range(3)])
    assert C.cross_tokenizer_claims(frame)["R3"]["verdict"] == "inconclusive"


def test_claims_md_renders_strict_json_records_with_null_bounds(tmp_path):
    import json

    record = C.main_table_claims(rows({"SePO": [0.9], "DPO": [0.1]}))["C2"]
    (tmp_path / "04_main_table").mkdir()
    from sepo.utils import write_json

    write_json(tmp_path / "04_main_table" / "metrics.json", {"claims": {"C2": record}})  # infinite bounds -> null
    text = C.write_claims(tmp_path).read_text()
    assert "+0.800 [n/a, n/a] over n=1 seeds" in text


def test_control_arms_are_reported_beside_the_c2_control_verdict():
    frame = rows({"SePO": [0.3, 0.32, 0.31], "SePO-random": [0.4, 0.42, 0.41], "SePO-gold": [0.6, 0.63, 0.62],
                  "SePO-noEOS": [0.5, 0.52, 0.5]})
    record = C.main_table_claims(frame)["C2-control"]
    assert record["verdict"] == "does not hold" and len(record["effects"]) == 4
    assert record["effects"][1]["mean"] == pytest.approx((0.6 + 0.63 + 0.62) / 3 - 0.41)
    assert "diagnostic arms" in record["note"]


def test_world_card_targets_and_table():
    from sepo.world.card import CARD, _met, card_markdown

    assert _met(0.8, (">=", 0.85)) is False and _met(0.9, (">=", 0.85)) is True
    assert _met(0.01, ("<=", 0.02)) is True and _met(float("nan"), ("<=", 0.02)) is None and _met(0.5, None) is None
    card = {key: {"value": 0.5, "target": None, "met": None, "paper_scale": "x", "measures": "y"} for key in CARD}
    card["label_agreement"].update(value=0.9, target=">= 0.85", met=True)
    card["oracle_heldout_accuracy"].update(value=0.6, target=">= 0.72", met=False)
    text = card_markdown(card)
    assert "| `label_agreement` | 0.900 | >= 0.85 | yes |" in text and "| `oracle_heldout_accuracy` | 0.600 | >= 0.72 | **no** |" in text


def test_a_verdict_that_moves_with_the_cpu_kernels_is_inconclusive(tmp_path):
    import json

    from sepo.errors import ConfigError
    from sepo.utils import write_json

    def results(where, sepo_c2, sepo_r5):
        (where / "04_main_table").mkdir(parents=True)
        claims = C.main_table_claims(rows({"SePO": sepo_c2, "DPO": [0.5, 0.51, 0.49]}))
        claims["R5"] = C.main_table_claims(rows({"SePO": sepo_r5, "DPO": [0.5, 0.5, 0.5]}))["R5"]
        write_json(where / "04_main_table" / "metrics.json", {"claims": claims})
        return where

    here = results(tmp_path / "here", [0.7, 0.72, 0.71], [0.7, 0.72, 0.71])
    other = results(tmp_path / "avx2", [0.7, 0.72, 0.71], [0.5, 0.52, 0.47])  # R5 inconclusive there, holds here
    C.write_claims(other)
    record = json.loads((other / "claims.json").read_text())
    record["numerics"] = "torch 2.13.0+cpu; cpu kernels AVX2"
    write_json(other / "claims.json", record)
    text = C.add_run(here, other).read_text()
    assert (here / "stability" / "avx2.json").is_file()
    table = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| C2 ") or line.startswith("| R5 ")}
    assert "| **holds** | holds | holds |" in table["C2"]  # the same in both runs
    assert "| **inconclusive** | holds | inconclusive |" in table["R5"]  # moves: reported as neither side
    assert "### R5: inconclusive" in text and "AVX2: inconclusive" in text and "  - AVX2 run: " in text
    # a record made by other project files is refused, not mixed in
    record["project"] = "0" * 16
    write_json(other / "claims.json", record)
    with pytest.raises(ConfigError, match="other project files"):
        C.add_run(here, other)
