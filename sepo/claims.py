"""``results/claims.md``: every claim (C1-C6) and reviewers' question (R1-R5) with its measured verdict.

Each notebook's ``metrics.json`` carries a ``claims`` mapping (id -> statement, per-seed effects with
95% t-intervals, verdict), computed by :mod:`sepo.experiments`. This module only gathers them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

ORDER = ("C1", "C2", "C2-control", "C3", "C3-gamma", "C4", "C5", "C6", "R1", "R2", "R3", "R4", "R5", "SDPO")

STATEMENTS = {
    "C1": "A response's total reward is dominated by a few tokens.",
    "C2": "SePO at k = 30% beats DPO, IPO, SimPO (and RRHF) trained on all tokens.",
    "C3": "Performance vs k rises then falls; vs k_l it falls past a point; sensitive to gamma / beta.",
    "C4": "Weak-to-strong: a small oracle supervises a much larger policy.",
    "C5": "Selecting key tokens on out-of-distribution data helps where all-token training over-optimizes.",
    "C6": "Oracle quality matters: an oracle trained on too little data selects badly.",
    "R1": "Do token rewards rank tokens like the true per-token credit?",
    "R2": "How does each method trade gold reward against KL to the reference?",
    "R3": "Can rewards be carried across tokenizers?",
    "R4": "How to choose k without a grid search?",
    "R5": "Win rate against the untrained (SFT) model itself.",
}


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:+.3f}"


def collect(results: Path) -> dict[str, tuple[str, dict]]:
    """Claim id -> (notebook name, claim record), from every ``results/<notebook>/metrics.json``."""
    found: dict[str, tuple[str, dict]] = {}
    for metrics_file in sorted(Path(results).glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        for cid, record in (metrics.get("claims") or {}).items():
            found[cid] = (metrics_file.parent.name, record)
    return found


def render(found: dict[str, tuple[str, dict]]) -> str:
    lines = [
        "# Claims and questions: what the mini world measured",
        "",
        "Effects are per-seed differences (or levels against a stated threshold) with 95% Student-t confidence",
        "intervals over seeds. Verdict: *holds* when the interval lies on the claimed side, *does not hold* when it",
        "lies on the other side, *inconclusive* when it spans the threshold, *mixed* when parts of a claim disagree.",
        "Judge: the mini world's gold reward (VADER sentiment with penalties for degenerate text), not an LLM.",
        "",
        "| id | claim | verdict | source |",
        "| --- | --- | --- | --- |",
    ]
    ids = [c for c in ORDER if c in found or c in STATEMENTS] + sorted(set(found) - set(ORDER))
    for cid in ids:
        if cid in found:
            source, record = found[cid]
            statement = record["statement"].replace("|", "\\|")  # a "|reward|" must not end the table cell
            lines.append(f"| {cid} | {statement} | **{record['verdict']}** | `results/{source}/` |")
        else:
            lines.append(f"| {cid} | {STATEMENTS[cid]} | not measured | - |")
    lines += ["", "## Effects", ""]
    for cid in ids:
        if cid not in found:
            continue
        source, record = found[cid]
        lines.append(f"### {cid}: {record['verdict']}")
        lines.append("")
        lines.append(record["statement"])
        lines.append("")
        for e in record["effects"]:
            values = ", ".join(f"{v:+.3f}" for v in e["values"])
            lines.append(f"- {e['name']}: {_fmt(e['mean'])} [{_fmt(e['low'])}, {_fmt(e['high'])}] over n={e['n']} seeds ({values})")
        if record.get("note"):
            lines.append(f"- note: {record['note']}")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_claims(results: str | Path) -> Path:
    results = Path(results)
    path = results / "claims.md"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render(collect(results)))
    tmp.replace(path)
    return path
