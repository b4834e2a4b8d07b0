"""The claims (C1-C6), the reviewers' questions (R1-R5), and the rules that give each its verdict.

Each claim's statement is written once, in :data:`STATEMENTS`. Each verdict rule is a pure function
of a table (a ``pandas.DataFrame`` with one row per run and seed, as :mod:`sepo.tables` builds it)
that returns claim records: the statement, the per-seed effects with 95% t-intervals (:mod:`sepo.stats`),
one verdict, and a note. Notebooks store the records in their ``metrics.json``;
:func:`write_claims` gathers them into ``results/claims.md``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sepo import stats

ORDER = ("C1", "C2", "C2-control", "C3", "C3-gamma", "C4", "C5", "C6", "R1", "R2", "R3", "R4", "R5", "SDPO")

STATEMENTS = {
    "C1": "A response's reward is dominated by a few tokens: the top 30% of tokens hold more of |reward| than they "
          "would of Gaussian noise",
    "C2": "SePO (k=30%) beats DPO, IPO, SimPO and RRHF trained on all tokens (gold win rate vs SFT)",
    "C2-control": "Choosing tokens by oracle reward beats random tokens of the same count",
    "C3": "Performance rises then falls with k; raising k_l past a point hurts",
    "C3-gamma": "SePO is sensitive to gamma (the scale of the selected-token log-probs)",
    "C4": "A small oracle supervises a much larger policy (weak-to-strong)",
    "C5": "Selecting key tokens on out-of-distribution data helps where all-token training over-optimizes",
    "C6": "An oracle trained on too little data selects worse (quality grows with its data)",
    "R1": "Oracle token rewards rank tokens like the true per-token credit (better than chance)",
    "R2": "Reward-vs-KL: SePO gets more gold reward than DPO for the same KL to the reference",
    "R3": "Token rewards carried across tokenizers by character offsets still select informative tokens",
    "R4": "Selecting by reward mass (adaptive count per response) matches or beats a fixed k=30%",
    "R5": "Win rate against the untrained SFT model itself (reported for every method)",
    "SDPO": "Selective-DPO selects better with a stronger reference",
}


def claim(cid: str, effects: list[stats.Effect], verdicts: list[str], note: str = "") -> dict[str, Any]:
    """A claim record: its statement, per-seed effects with 95% CIs, one verdict (parts combined)."""
    return {
        "statement": STATEMENTS[cid],
        "effects": [e.to_dict() for e in effects],
        "verdict": stats.combine(verdicts),
        "note": note,
    }


def _by(frame, column: str = "method") -> dict[str, Any]:
    """Rows of each value of ``column``, in seed order."""
    return {m: frame[frame[column] == m].sort_values("seed") for m in frame[column].unique()}


# --------------------------------------------------------------------------------------------
# Verdict rules, one per table
# --------------------------------------------------------------------------------------------
def main_table_claims(frame) -> dict[str, dict]:
    """C2 (SePO against each all-token baseline), R5 (SePO against its own SFT model), C2-control
    (oracle-selected against random tokens), from a main table with ``method``, ``seed``, ``win_rate``."""
    by = _by(frame)
    effects, verdicts = [], []
    for rival in [m for m in ("DPO", "IPO", "SimPO", "RRHF") if m in by and "SePO" in by]:
        e = stats.paired_effect(f"win rate vs SFT: SePO - {rival}", by["SePO"].win_rate.tolist(), by[rival].win_rate.tolist())
        effects.append(e)
        verdicts.append(stats.verdict(e))
    claims = {}
    if effects:
        claims["C2"] = claim("C2", effects, verdicts)
    if "SePO" in by:
        e = stats.effect("SePO win rate vs its own SFT model - 0.5", [w - 0.5 for w in by["SePO"].win_rate])
        claims["R5"] = claim("R5", [e], [stats.verdict(e)])
    if "SePO" in by and "SePO-random" in by:
        e = stats.paired_effect("win rate: SePO - SePO with random tokens", by["SePO"].win_rate.tolist(),
                                by["SePO-random"].win_rate.tolist())
        effects, notes = [e], ["the verdict reads the first effect"]
        arms = [("SePO-gold", "SePO-random", "gold-credit tokens - random tokens (what any oracle could add)"),
                ("SePO-gold", "SePO", "gold-credit tokens - oracle tokens (what a better oracle could add)"),
                ("SePO-noEOS", "SePO", "oracle tokens without EOS - oracle tokens (does EOS decide the outcome?)")]
        for a, b, label in arms:
            if a in by and b in by:
                effects.append(stats.paired_effect(f"win rate: {label}", by[a].win_rate.tolist(), by[b].win_rate.tolist()))
        if len(effects) > 1:
            notes.append("the others are diagnostic arms")
        claims["C2-control"] = claim("C2-control", effects, [stats.verdict(e)], "; ".join(notes))
    return claims


def oracle_fraction_claims(frame) -> dict[str, dict]:
    """C6 from an oracle-fraction table (``fraction``, ``seed``, ``chosen_precision`` and, when policies
    were trained, ``policy_win_rate``): per seed, the least-squares slope of each quantity on
    log(fraction) over **all** fractions; the verdict reads the slopes' t-interval (positive: quality
    grows with the oracle's data)."""
    import math

    fractions = sorted(float(f) for f in frame.fraction.unique())
    columns = [("chosen_precision", "chosen precision vs gold")]
    if "policy_win_rate" in frame:
        columns.append(("policy_win_rate", "SePO policy win rate"))
    effects = []
    for column, label in columns:
        slopes = []
        for _, group in frame.groupby("seed"):
            group = group.sort_values("fraction")
            slopes.append(stats.slope([math.log(f) for f in group.fraction], group[column].tolist()))
        effects.append(stats.effect(f"{label}: slope per unit of log(oracle fraction), over fractions {fractions}", slopes))
    return {"C6": claim("C6", effects, [stats.verdict(e) for e in effects],
                        "a trend over every fraction, not the end points; positive slope: better with more data")}


def token_reward_claims(frame) -> dict[str, dict]:
    """C1 (concentration beyond Gaussian noise of the same lengths) and R1 (agreement with gold credit
    beyond random selection), from the per-seed token-reward report."""
    c1 = [stats.paired_effect(f"share of |reward| in the top 30% of tokens ({side}) minus the same for Gaussian noise",
                              frame[f"{side}/oracle_top30"].tolist(), frame[f"{side}/gaussian_top30"].tolist())
          for side in ("chosen", "rejected")]
    r1 = [stats.paired_effect("chosen: precision of oracle top-k vs gold top-k, minus random", frame["chosen/precision"].tolist(),
                              frame["chosen/random_precision"].tolist()),
          stats.paired_effect("rejected: precision of oracle bottom-k vs gold bottom-k, minus random",
                              frame["rejected/precision"].tolist(), frame["rejected/random_precision"].tolist()),
          stats.effect("chosen: Spearman(oracle reward, gold credit)", frame["chosen/spearman"].tolist())]
    return {
        "C1": claim("C1", c1, [stats.verdict(e) for e in c1],
                    "gold credit, for comparison: the top 30% of tokens hold "
                    f"{frame['chosen/gold_top30'].mean():.2f} (chosen) and {frame['rejected/gold_top30'].mean():.2f} (rejected)"),
        "R1": claim("R1", r1, [stats.verdict(e) for e in r1]),
    }


def ablation_claims(frame) -> dict[str, dict]:
    """C3 (k and k_l), C3-gamma and R4 (adaptive selection against k = 0.3) from an ablation table
    with ``parameter``, ``value``, ``seed``, ``win_rate``."""

    def values(parameter):
        return sorted(frame[frame.parameter == parameter].value.unique())

    def series(parameter, value):
        return frame[(frame.parameter == parameter) & (frame.value == value)].sort_values("seed").win_rate.tolist()

    ks, k_ls, gammas, masses = values("k"), values("k_l"), values("gamma"), values("adaptive_mass")
    effects, verdicts, notes = [], [], []
    if len(ks) >= 3:
        means = {k: float(sum(series("k", k)) / len(series("k", k))) for k in ks}
        interior = [k for k in ks if min(ks) < k < max(ks)]
        best = max(interior, key=means.get)
        rise = stats.paired_effect(f"win rate: k={best} (best interior) - k={min(ks)}", series("k", best), series("k", min(ks)))
        fall = stats.paired_effect(f"win rate: k={best} (best interior) - k={max(ks)}", series("k", best), series("k", max(ks)))
        effects += [rise, fall]
        verdicts += [stats.verdict(rise), stats.verdict(fall)]
        notes.append(f"the interior k was chosen as the best mean ({best}), which favours a rise-and-fall; read the CIs with that in mind")
    if len(k_ls) >= 2:
        e = stats.paired_effect(f"win rate: k_l={min(k_ls)} - k_l={max(k_ls)} (k_w=0.3)", series("k_l", min(k_ls)),
                                series("k_l", max(k_ls)))
        effects.append(e)
        verdicts.append(stats.verdict(e))
    claims = {"C3": claim("C3", effects, verdicts, "; ".join(notes))} if effects else {}
    if len(gammas) >= 2:
        e = stats.paired_effect(f"win rate: gamma={max(gammas)} - gamma={min(gammas)}", series("gamma", max(gammas)),
                                series("gamma", min(gammas)))
        claims["C3-gamma"] = claim("C3-gamma", [e], [stats.verdict(e) if e.mean >= 0 else stats.verdict(e, direction=-1)])
    if masses and 0.3 in ks:
        best_mass = max(masses, key=lambda m: sum(series("adaptive_mass", m)))
        e = stats.paired_effect(f"win rate: adaptive mass={best_mass} - fixed k=0.3", series("adaptive_mass", best_mass),
                                series("k", 0.3))
        claims["R4"] = claim("R4", [e], [stats.verdict(e)], "positive: adaptive better; a CI spanning 0 means no detectable difference")
    return claims


def weak_to_strong_claims(frame, oracle_sizes: list[str], policy_sizes: list[str]) -> dict[str, dict]:
    """C4 at the largest policy: the smallest oracle's SePO policy against its own SFT model (the verdict),
    against an oracle of the policy's own size, and against the policy's all-token baseline (DPO). When the
    policy-size oracle's SePO arm fails too, the loss fails whatever the oracle, and C4 is "confounded"."""
    weak, strong = oracle_sizes[0], policy_sizes[-1]
    sepo = frame[frame.method == "SePO"]
    cell = sepo[(sepo.oracle_size == weak) & (sepo.policy_size == strong)].sort_values("seed")
    main = stats.effect(f"win rate vs own SFT - 0.5: {weak} oracle -> {strong} policy", [w - 0.5 for w in cell.win_rate])
    effects, verdict, notes = [main], stats.verdict(main), []
    same = sepo[(sepo.oracle_size == strong) & (sepo.policy_size == strong)].sort_values("seed")
    if len(same) and weak != strong:
        effects.append(stats.paired_effect(f"win rate: {weak} oracle - {strong} oracle, {strong} policy",
                                           cell.win_rate.tolist(), same.win_rate.tolist()))
        control = stats.effect(f"win rate vs own SFT - 0.5: {strong} oracle -> {strong} policy", [w - 0.5 for w in same.win_rate])
        effects.append(control)
        if stats.verdict(control) == stats.FAILS and verdict != stats.HOLDS:
            verdict = stats.CONFOUNDED
            notes.append(f"the {strong} oracle's SePO policy fails too: the loss fails whatever the oracle, so weak-to-strong "
                         "cannot be read")
    baseline = frame[(frame.method == "DPO") & (frame.policy_size == strong)].sort_values("seed")
    if len(baseline) == len(cell):
        effects.append(stats.paired_effect(f"win rate: SePO ({weak} oracle) - DPO, {strong} policy", cell.win_rate.tolist(),
                                           baseline.win_rate.tolist()))
    notes.append("the verdict reads the first effect; the others compare with an oracle of the policy's size and its DPO baseline")
    record = claim("C4", effects, [verdict], "; ".join(notes))
    return {"C4": record}


def reward_at_kl(points, kl: float) -> float:
    """Gold reward along one frontier (sorted by KL), linearly interpolated at ``kl``."""
    import numpy as np

    ordered = points.sort_values("kl")
    return float(np.interp(kl, ordered.kl.to_numpy(), ordered.reward.to_numpy()))


def _trained(curve):
    """The trained points of one frontier (step 0 is the SFT model; step -1 the final weights), in training order."""
    curve = curve[curve.step != 0]
    order = curve.step.where(curve.step >= 0, curve.step.max() + 1)
    return curve.assign(order=order).sort_values("order")


def ood_claims(frame, curves, baseline: str = "DPO") -> dict[str, dict]:
    """C5 from out-of-distribution training: ``frame`` (``method``, ``seed``, ``win_rate``) and the
    frontiers ``curves`` (``method``, ``seed``, ``step``, ``kl``, ``reward``).

    C5's premise is checked first on the all-token ``baseline``: gold reward falls with more training
    (per seed, reward at the last checkpoint minus at the middle one, below zero). Without it the verdict
    is "premise not met".
    """
    by = _by(frame)
    effects, verdicts = [], []
    for rival in [m for m in by if m != "SePO" and "SePO" in by]:
        e = stats.paired_effect(f"win rate vs SFT after OOD training: SePO - {rival}", by["SePO"].win_rate.tolist(),
                                by[rival].win_rate.tolist())
        effects.append(e)
        verdicts.append(stats.verdict(e))
    claims = {}
    if effects:
        verdict, note = stats.combine(verdicts), ""
        if baseline in by:
            drops = []
            for seed in sorted(frame.seed.unique()):
                trained = _trained(curves[(curves.method == baseline) & (curves.seed == seed)])
                if len(trained) >= 2:
                    drops.append(float(trained.reward.iloc[-1] - trained.reward.iloc[(len(trained) - 1) // 2]))
            if drops:
                premise = stats.effect(f"premise: {baseline} gold reward at its last checkpoint minus at its middle one", drops)
                effects.insert(0, premise)
                if stats.verdict(premise, direction=-1) != stats.HOLDS:
                    verdict = stats.PREMISE_NOT_MET
                    note = f"all-token training ({baseline}) is not seen to over-optimize: its gold reward does not fall with more training"
        claims["C5"] = {**claim("C5", effects, [verdict], note)}
    return claims


def matched_kl(curves, a: str, b: str) -> tuple[list[float], list[int], list[float]]:
    """Per seed, gold reward of ``a`` minus ``b`` at the largest KL inside the range both methods' trained points
    measured (no interpolation towards the SFT point, no extrapolation). Returns the differences, the seeds left
    out (ranges that do not overlap) and the KLs compared at."""
    diffs, skipped, at = [], [], []
    for seed in sorted(curves.seed.unique()):
        x = _trained(curves[(curves.method == a) & (curves.seed == seed)])
        y = _trained(curves[(curves.method == b) & (curves.seed == seed)])
        if len(x) == 0 or len(y) == 0:
            skipped.append(int(seed))
            continue
        low, high = max(x.kl.min(), y.kl.min()), min(x.kl.max(), y.kl.max())
        if not high >= low:
            skipped.append(int(seed))
            continue
        diffs.append(reward_at_kl(x, high) - reward_at_kl(y, high))
        at.append(float(high))
    return diffs, skipped, at


def frontier_claims(curves, baseline: str = "DPO") -> dict[str, dict]:
    """R2 from the main table's reward-vs-KL frontiers (the same runs as the table, at each method's chosen
    learning rate): SePO against ``baseline`` at matched KL (:func:`matched_kl`); with no shared KL range in
    any seed, "not measured". The other methods on the frontier are compared with ``baseline`` the same way
    (diagnostics; the verdict reads the first effect)."""
    methods = list(dict.fromkeys(curves.method))
    if "SePO" not in methods or baseline not in methods:
        return {}
    diffs, skipped, at = matched_kl(curves, "SePO", baseline)
    notes = []
    if skipped:
        notes.append(f"seeds {skipped}: SePO's and {baseline}'s trained points share no KL range")
    if not diffs:
        return {"R2": {"statement": STATEMENTS["R2"], "effects": [], "verdict": stats.NOT_MEASURED, "note": "; ".join(notes)}}
    effects = [stats.effect(f"gold reward at the largest KL both reached: SePO - {baseline}", diffs)]
    notes.append(f"compared at KL {min(at):.2f}-{max(at):.2f} nats")
    for other in [m for m in methods if m not in ("SePO", baseline)]:
        d, _, _ = matched_kl(curves, other, baseline)
        if d:
            effects.append(stats.effect(f"gold reward at the largest KL both reached: {other} - {baseline}", d))
    if len(effects) > 1:
        notes.append("the verdict reads the first effect; the others are diagnostics")
    return {"R2": claim("R2", effects, [stats.verdict(effects[0])], "; ".join(notes))}


def selective_dpo_claims(frame, k: float) -> dict[str, dict]:
    """SDPO: Selective-DPO keeping a fraction ``k`` of tokens, strong against weak reference."""
    weak = frame[frame.reference.str.startswith("weak") & (frame.k == k)].sort_values("seed")
    strong = frame[frame.reference.str.startswith("strong") & (frame.k == k)].sort_values("seed")
    e = stats.paired_effect(f"win rate vs SFT: strong - weak reference (keeping k={k} of tokens)", strong.win_rate.tolist(),
                            weak.win_rate.tolist())
    return {"SDPO": claim("SDPO", [e], [stats.verdict(e)])}


def cross_tokenizer_claims(frame) -> dict[str, dict]:
    """R3: the carried oracle's top-k precision against random, and its SePO policy against the
    same-tokenizer oracle's (``oracle`` is "same tokenizer" or another label)."""
    same = frame[frame.oracle == "same tokenizer"].sort_values("seed")
    other = frame[frame.oracle != "same tokenizer"].sort_values("seed")
    effects = [stats.paired_effect("carried oracle: chosen precision minus random", other.chosen_precision.tolist(),
                                   other.random_precision.tolist()),
               stats.paired_effect("win rate: carried - same-tokenizer oracle", other.win_rate.tolist(), same.win_rate.tolist())]
    return {"R3": claim("R3", effects, [stats.verdict(effects[0])],
                        "the verdict reads the first effect; the second shows what is lost against a same-tokenizer oracle")}


def describe(records: dict[str, dict]) -> str:
    """One line per claim and per effect, from the records themselves (what a notebook prints beside its table)."""
    lines = []
    for cid, record in records.items():
        lines.append(f"{cid}: {record['verdict']} -- {record['statement']}")
        for e in record["effects"]:
            lines.append(f"    {e['name']}: {_fmt(e['mean'])} [{_fmt(e['low'])}, {_fmt(e['high'])}], n={e['n']}")
        if record.get("note"):
            lines.append(f"    note: {record['note']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# results/claims.md
# --------------------------------------------------------------------------------------------
def _fmt(x: float | None) -> str:
    """A signed number; strict JSON stores an infinite or undefined bound as null."""
    if x is None or math.isnan(x):
        return "n/a"
    return ("+inf" if x > 0 else "-inf") if math.isinf(x) else f"{x:+.3f}"


def collect(results: Path) -> dict[str, tuple[str, dict]]:
    """Claim id -> (notebook name, claim record), from every ``results/<notebook>/metrics.json``."""
    found: dict[str, tuple[str, dict]] = {}
    for metrics_file in sorted(Path(results).glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        for cid, record in (metrics.get("claims") or {}).items():
            found[cid] = (metrics_file.parent.name, record)
    return found


# --------------------------------------------------------------------------------------------
# Verdicts that survive the machine: the same reproduction under another CPU kernel set
# --------------------------------------------------------------------------------------------
STABILITY = "stability"  # results/stability/<kernels>.json: another run's claims, made by the same project files


def project_fingerprint(root: Path | None = None) -> str:
    """Hash of what makes the reproduction's numbers: the package, the mini configs and the notebooks."""
    import hashlib

    root = root or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    files = sorted(list((root / "sepo").rglob("*.py")) + list((root / "configs" / "mini").rglob("*.yaml"))
                   + list((root / "notebooks").glob("*.ipynb")))
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def claims_record(found: dict[str, tuple[str, dict]]) -> dict[str, Any]:
    """``results/claims.json``: every claim record with its source, and what made the numbers."""
    from sepo.cache import numerics

    return {"project": project_fingerprint(), "numerics": numerics(),
            "claims": {cid: {"source": source, **record} for cid, (source, record) in found.items()}}


def kernels_label(record: dict) -> str:
    """``AVX2`` from ``"torch ...; mkl branch ...; cpu kernels AVX2"``."""
    return record["numerics"].rsplit(" ", 1)[-1]


def other_runs(results: Path) -> list[dict]:
    """The other runs' claims recorded in ``results/stability/`` that the same project files made (a record of
    other code is ignored: its differences would not be the machine's)."""
    runs = []
    for path in sorted(Path(results, STABILITY).glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("project") == project_fingerprint():
            runs.append(record)
    return runs


def stable_verdict(verdicts: list[str]) -> str:
    """One verdict over runs that differ only in float rounding: the same in every run, or "inconclusive"."""
    return verdicts[0] if len(set(verdicts)) == 1 else stats.INCONCLUSIVE


def render(found: dict[str, tuple[str, dict]], others: list[dict] | None = None, here: str = "") -> str:
    others = others or []
    labels = [here] + [kernels_label(o) for o in others]
    lines = [
        "# Claims and questions: what the mini world measured",
        "",
        "Effects are per-seed differences (or levels against a stated threshold, or per-seed slopes) with 95% Student-t",
        "confidence intervals over seeds. Verdict: *holds* when the interval lies on the claimed side, *does not hold*",
        "when it lies on the other side, *inconclusive* when it spans the threshold. A claim of several parts is *mixed*",
        "when some parts hold and others do not, and does not hold when a part fails and none holds. *Premise not met*:",
        "what the claim presupposes is not seen; *confounded*: a control arm fails too; *not measured*: the data",
        "cannot answer (e.g. no KL range both methods reached). The rules are the functions of `sepo/claims.py`.",
        "Judge: the mini world's gold reward (VADER sentiment with penalties for degenerate text), not an LLM.",
        "",
    ]
    if others:
        lines += [
            f"Stability: the same reproduction, from an empty cache, ran under the CPU kernel sets {', '.join(labels)}",
            "(torch's `ATEN_CPU_CAPABILITY`; the reproduction fixes it, and MKL's branch, so that CPUs with and without",
            "AVX-512 compute alike; another kernel set rounds the way another machine would). The verdict column is",
            "the verdict of every run when they agree and *inconclusive* when they do not; each run's own verdict and",
            "effects are shown beside it.",
            "",
            "| id | claim | verdict | " + " | ".join(f"{label} run" for label in labels) + " | source |",
            "| --- | --- | --- | " + " | ".join("---" for _ in labels) + " | --- |",
        ]
    else:
        lines += ["| id | claim | verdict | source |", "| --- | --- | --- | --- |"]
    ids = [c for c in ORDER if c in found or c in STATEMENTS] + sorted(set(found) - set(ORDER))

    def verdicts_of(cid: str) -> list[str]:
        return [found[cid][1]["verdict"]] + [o["claims"].get(cid, {}).get("verdict", NOT_RUN) for o in others]

    for cid in ids:
        if cid in found:
            source, record = found[cid]
            statement = record["statement"].replace("|", "\\|")  # a "|reward|" must not end the table cell
            runs = verdicts_of(cid)
            shown = " | ".join(runs) + " | " if others else ""
            lines.append(f"| {cid} | {statement} | **{stable_verdict(runs)}** | {shown}`results/{source}/` |")
        else:
            lines.append(f"| {cid} | {STATEMENTS[cid].replace('|', chr(92) + '|')} | not measured | "
                         + ("- | " * len(labels) if others else "") + "- |")
    lines += ["", "## Effects", ""]
    for cid in ids:
        if cid not in found:
            continue
        source, record = found[cid]
        runs = verdicts_of(cid)
        verdict = stable_verdict(runs)
        lines.append(f"### {cid}: {verdict}")
        lines.append("")
        lines.append(record["statement"])
        lines.append("")
        if others and len(set(runs)) > 1:
            lines.append("The verdict moves with the CPU kernel set (" + ", ".join(f"{l}: {v}" for l, v in zip(labels, runs))
                         + "), so it is reported as inconclusive.")
            lines.append("")
        for i, e in enumerate(record["effects"]):
            values = ", ".join(_fmt(v) for v in e["values"])
            lines.append(f"- {e['name']}: {_fmt(e['mean'])} [{_fmt(e['low'])}, {_fmt(e['high'])}] over n={e['n']} seeds ({values})")
            for label, other in zip(labels[1:], others):
                effects = other["claims"].get(cid, {}).get("effects", [])
                match = next((o for o in effects if o["name"] == e["name"]), None)
                if match:
                    lines.append(f"  - {label} run: {_fmt(match['mean'])} [{_fmt(match['low'])}, {_fmt(match['high'])}]")
        if record.get("note"):
            lines.append(f"- note: {record['note']}")
        lines.append("")
    return "\n".join(lines) + "\n"


NOT_RUN = "not run"


def write_claims(results: str | Path) -> Path:
    """``results/claims.json`` (this run's records) and ``results/claims.md`` (with the other kernel sets' runs
    of ``results/stability/`` beside them)."""
    from sepo.utils import write_json, write_text

    found = collect(Path(results))
    record = claims_record(found)
    write_json(Path(results) / "claims.json", record)
    path = Path(results) / "claims.md"
    write_text(path, render(found, other_runs(Path(results)), kernels_label(record)))
    return path


def add_run(results: str | Path, other_results: str | Path) -> Path:
    """Record another run's ``claims.json`` (e.g. the reproduction under ``ATEN_CPU_CAPABILITY=default``) as
    ``results/stability/<kernels>.json`` and rewrite ``claims.md``; the run must come from the same project files."""
    from sepo.errors import ConfigError
    from sepo.utils import write_json

    source = Path(other_results) / "claims.json"
    if not source.is_file():
        raise ConfigError(f"{source}: not found (run python -m sepo.reproduce --results {other_results} first)")
    record = json.loads(source.read_text())
    if record.get("project") != project_fingerprint():
        raise ConfigError(f"{source}: made by other project files ({record.get('project')}, here {project_fingerprint()})")
    write_json(Path(results) / STABILITY / f"{kernels_label(record).lower()}.json", record)
    return write_claims(results)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Write results/claims.md (and record another run's claims beside it)")
    parser.add_argument("results", nargs="?", default=str(Path(__file__).resolve().parents[1] / "results"))
    parser.add_argument("--add-run", default=None, help="the results directory of the same reproduction under other CPU kernels")
    args = parser.parse_args(argv)
    path = add_run(args.results, args.add_run) if args.add_run else write_claims(args.results)
    print(f"claims written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
