"""Two reproductions' ``results/`` compared number by number, verdict by verdict and world-card target by target.

Two cold ``make reproduce`` runs of the same project files either agree bit for bit (same machine, same kernels:
the determinism check) or differ only in float rounding (another host or kernel set) and what it grows into. This
reads every ``*.json`` under both results directories (``reproduce_timing.json``, ``stability/`` and the
benchmarks' own files aside) and reports, per file, how many numbers differ and by how much; then each claim's
verdict in both runs and each world-card target's value and whether it was met.

``python benchmarks/compare_runs.py --pair "A=RESULTS_A,B=RESULTS_B" [--pair ...] [--write FILE.json]
[--markdown FILE.md]`` compares each pair (labels name the runs; no path reaches the written files).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

SKIP = {"reproduce_timing.json", "performance.json", "performance_rates.json", "reproduce_side_by_side.json",
        "whole_commands.json", "stage_split.json", "cross_host.json", "cross_host_pinned.json", "replay_side_by_side.json",
        "workloads_side_by_side.json"}  # the benchmarks' own records, not the reproduction's numbers


def leaves(value, path: str = ""):
    """``(path, leaf)`` for every leaf of a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def compare_files(a: dict | list, b: dict | list) -> dict:
    """Numbers and other leaves of two JSON documents: how many, how many differ, the largest relative difference."""
    left, right = dict(leaves(a)), dict(leaves(b))
    numbers = differ = others = others_differ = 0
    largest = 0.0
    for key in sorted(left.keys() | right.keys()):
        x, y = left.get(key), right.get(key)
        if _number(x) and _number(y):
            numbers += 1
            if x != y:
                differ += 1
                scale = max(abs(x), abs(y))
                largest = max(largest, abs(x - y) / scale if scale and math.isfinite(scale) else 0.0)
        else:
            others += 1
            others_differ += x != y
    return {"numbers": numbers, "numbers_differ": differ, "largest_relative_difference": largest,
            "other_leaves": others, "other_leaves_differ": others_differ}


def compare(results_a: str | Path, results_b: str | Path) -> dict:
    a, b = Path(results_a), Path(results_b)
    files = {}
    for path in sorted(a.rglob("*.json")):
        rel = path.relative_to(a)
        if path.name in SKIP or rel.parts[0] == "stability":
            continue
        other = b / rel
        if not other.is_file():
            files[str(rel)] = {"missing_in_b": True}
            continue
        files[str(rel)] = compare_files(json.loads(path.read_text()), json.loads(other.read_text()))
    numbers = sum(f.get("numbers", 0) for f in files.values())
    differ = sum(f.get("numbers_differ", 0) for f in files.values())
    claims_a = json.loads((a / "claims.json").read_text())
    claims_b = json.loads((b / "claims.json").read_text())
    verdicts = {cid: [rec.get("verdict"), claims_b["claims"].get(cid, {}).get("verdict")]
                for cid, rec in claims_a["claims"].items()}
    card = {}
    card_a = json.loads((a / "world_card.json").read_text()) if (a / "world_card.json").is_file() else {}
    card_b = json.loads((b / "world_card.json").read_text()) if (b / "world_card.json").is_file() else {}
    for key, entry in card_a.items():
        if isinstance(entry, dict) and "met" in entry:
            other = card_b.get(key, {})
            card[key] = {"values": [entry.get("value"), other.get("value")], "met": [entry.get("met"), other.get("met")],
                         "target": entry.get("target")}
    return {"project": [claims_a.get("project"), claims_b.get("project")],
            "numerics": [claims_a.get("numerics"), claims_b.get("numerics")],
            "numbers": numbers, "numbers_differ": differ, "files": files, "verdicts": verdicts,
            "verdicts_differ": sorted(cid for cid, (x, y) in verdicts.items() if x != y), "world_card": card}


def render(comparisons: list[dict], intro: str = "") -> str:
    """A markdown report of :func:`compare` results (each with its ``labels``)."""
    lines = ["# Two cold reproductions compared", ""]
    if intro:
        lines += [intro, ""]
    lines += ["Written by `benchmarks/compare_runs.py`: every number of every `results/*/metrics.json`, `claims.json` and "
              "`world_card.json` of one run against the other's, then each claim's verdict and each world-card target.", ""]
    for c in comparisons:
        a, b = c["labels"]
        same = "the same project files" if c["project"][0] == c["project"][1] else "DIFFERENT project files"
        lines += [f"## {a} vs {b}", "",
                  f"{same} ({c['project'][0]}); numerics {c['numerics'][0]} / {c['numerics'][1]}. "
                  f"Numbers that differ: **{c['numbers_differ']} of {c['numbers']}**; verdicts that differ: "
                  f"**{len(c['verdicts_differ'])} of {len(c['verdicts'])}**"
                  + (f" ({', '.join(c['verdicts_differ'])})" if c["verdicts_differ"] else "") + ".", "",
                  f"| claim | {a} | {b} |", "| --- | --- | --- |"]
        for cid, (x, y) in c["verdicts"].items():
            mark = " (moves)" if x != y else ""
            lines.append(f"| {cid} | {x} | {y}{mark} |")
        lines += ["", f"| world-card target | target | {a} | {b} |", "| --- | --- | --- | --- |"]
        for key, entry in c["world_card"].items():
            if entry["target"] is None:
                continue
            cells = [f"{v:.3f} ({'met' if m else 'not met'})" for v, m in zip(entry["values"], entry["met"])]
            lines.append(f"| {key} | {entry['target']} | {cells[0]} | {cells[1]} |")
        lines += ["", "| file | numbers | differ | largest relative difference |", "| --- | --- | --- | --- |"]
        for name, f in c["files"].items():
            if f.get("missing_in_b"):
                lines.append(f"| `{name}` | missing in {b} | | |")
            else:
                lines.append(f"| `{name}` | {f['numbers']} | {f['numbers_differ']} | {f['largest_relative_difference']:.2g} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", action="append", required=True, help="LABEL_A=RESULTS_A,LABEL_B=RESULTS_B")
    parser.add_argument("--intro", default="", help="a paragraph saying which runs these are")
    parser.add_argument("--write", default="", help="also write the comparisons to this JSON file")
    parser.add_argument("--markdown", default="", help="also write them as a markdown report")
    args = parser.parse_args()
    comparisons = []
    for pair in args.pair:
        (label_a, dir_a), (label_b, dir_b) = (side.split("=", 1) for side in pair.split(","))
        comparisons.append({"labels": [label_a, label_b], **compare(dir_a, dir_b)})
        c = comparisons[-1]
        print(f"{label_a} vs {label_b}: {c['numbers_differ']} of {c['numbers']} numbers differ; "
              f"verdicts that differ: {c['verdicts_differ']}")
    if args.write:
        Path(args.write).write_text(json.dumps({"comparisons": comparisons}, indent=2, allow_nan=False) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(render(comparisons, args.intro))


if __name__ == "__main__":
    main()
