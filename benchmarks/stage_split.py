"""Where a cold ``make reproduce`` spent its time, by stage, from what the stage runs recorded in ``cache/``.

Every stage run writes its wall clock beside its results: the world's ``metrics.json`` (``timing/<step>_seconds``:
text, tokenizers, one SFT run per model, pair sampling, labels), each oracle's and policy's ``timing.json``
(``total_seconds``; an oracle's ``scoring_seconds`` is its token scoring) and each evaluation's ``timing.json``
(``sampling_seconds``, ``judging_seconds``, ``kl_seconds``). After a cold reproduction every run in the cache
was made by it, so these sum to the stages' share of the reproduction's wall time
(``results/reproduce_timing.json``); the rest ("notebooks, figures, other") is what ran outside stage runs:
kernels starting, reference samples for shared evaluations, analyses and figures.

The reproduction runs ``workers`` notebooks at once, each a one-thread process, so the stages' seconds add up to
the process-seconds the run had, ``workers x wall``, not to its wall time; the rest is split off as "notebooks,
figures, other" the same way. Three kinds of derived work are not stage runs and keep no clock: the reward-vs-KL
frontier traces (``policy/*/frontier_*.csv``, one row per evaluated point), the held-out diagnostics
(``derived/*/heldout/*.json``) and the shared reference samples (``derived/*/reference_outputs/*.json``); they are
counted, and ``--retime`` measures one frontier trace and one held-out diagnostic again (one thread, into a
temporary directory: the cache is not touched) to estimate their share.

``python benchmarks/stage_split.py [--cache cache] [--timing results/reproduce_timing.json] [--retime]
[--write results/stage_split.json] [--report results/performance.md]`` prints the split as JSON (writes it, and puts
section 6 of the performance report in place); ``make bench`` shows the recorded split in the same section.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

STAGES = ("world", "SFT", "oracles", "scoring", "policies", "sampling", "judging", "KL", "notebooks, figures, other")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _glob(cache: Path, pattern: str, until: float | None) -> list[Path]:
    """``cache.glob(pattern)`` without the files written after ``until``."""
    return sorted(f for f in cache.glob(pattern) if until is None or f.stat().st_mtime <= until)


def split_by_stage(cache: str | Path, total_seconds: float | None = None, workers: int = 1,
                   until: float | None = None) -> dict:
    """Seconds per stage summed over the runs in ``cache``, run counts, the untimed derived work's counts, and
    the rest of the ``workers x total_seconds`` process-seconds of the run. With ``until`` (a POSIX time: when
    the reproduction ended) files written later, by other runs into the same cache, are left out."""
    cache = Path(cache)
    seconds: dict[str, float] = defaultdict(float)
    runs: dict[str, int] = defaultdict(int)
    for metrics_file in _glob(cache, "world/*/metrics.json", until):
        for key, value in _read(metrics_file).items():
            if not (key.startswith("timing/") and key.endswith("_seconds")) or key == "timing/total_seconds":
                continue
            step = key[len("timing/"):-len("_seconds")]
            stage = "SFT" if step.startswith("sft_") else "world"
            seconds[stage] += value
            runs[stage] += step.startswith("sft_")
        runs["world"] += 1
    for timing_file in _glob(cache, "oracle/*/timing.json", until):
        timing = _read(timing_file)
        scoring = timing.get("scoring_seconds", 0.0)
        seconds["oracles"] += timing.get("total_seconds", 0.0) - scoring
        seconds["scoring"] += scoring
        runs["oracles"] += 1
        runs["scoring"] += 1
    for timing_file in _glob(cache, "policy/*/timing.json", until):
        seconds["policies"] += _read(timing_file).get("total_seconds", 0.0)
        runs["policies"] += 1
    for timing_file in _glob(cache, "evaluate/*/timing.json", until):
        timing = _read(timing_file)
        for stage in ("sampling", "judging", "kl"):
            seconds["KL" if stage == "kl" else stage] += timing.get(f"{stage}_seconds", 0.0)
        for stage in ("sampling", "judging", "KL"):
            runs[stage] += 1
    untimed = len(_glob(cache, "evaluate/*/metrics.json", until)) - len(_glob(cache, "evaluate/*/timing.json", until))
    frontier_rows = sum(max(len(_read_lines(f)) - 1, 0) for f in _glob(cache, "policy/*/frontier_*.csv", until))
    out = {"seconds": {s: seconds[s] for s in STAGES[:-1]}, "runs": {s: runs[s] for s in STAGES[:-1]},
           "evaluations_without_timing": untimed,
           "untimed": {"frontier_traces": len(_glob(cache, "policy/*/frontier_*.csv", until)), "frontier_points": frontier_rows,
                       "heldout_diagnostics": len(_glob(cache, "derived/*/heldout/*.json", until)),
                       "reference_samples": len(_glob(cache, "derived/*/reference_outputs/*.json", until))}}
    if total_seconds is not None:
        out["total_seconds"] = total_seconds
        out["workers"] = workers
        out["process_seconds"] = total_seconds * workers
        out["seconds"][STAGES[-1]] = total_seconds * workers - sum(out["seconds"].values())
    return out


def _read_lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def retime(cache: str | Path, until: float | None = None) -> dict:
    """Seconds of one frontier trace and one held-out diagnostic, made again on one thread into a temporary
    directory from the runs in ``cache`` (the main table's settings, ``configs/mini/base.yaml``), and whether
    the trace reproduced the cached CSV byte for byte. The process computes on the reproduction's pinned
    kernels (set before torch loads), so it finds the reproduction's world and models under their keys."""
    import os

    from sepo.reproduce import PINNED_KERNELS

    for name, value in PINNED_KERNELS.items():
        os.environ.setdefault(name, value)
    import torch

    from sepo.pipeline import ExperimentConfig, Pipeline, _trace_frontier

    torch.set_num_threads(1)
    config = ExperimentConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "mini" / "base.yaml",
                                        cache_dir=str(Path(cache).resolve()))
    pipe = Pipeline(config)
    traces = _glob(Path(cache), "policy/*/frontier_*.csv", until)
    if not traces:
        raise SystemExit(f"{cache}: no frontier trace to time (policy/*/frontier_*.csv)")
    cached = traces[0]
    first = _read_lines(cached)[1].split(",")
    header = _read_lines(cached)[0].split(",")
    row = dict(zip(header, first))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        _trace_frontier(pipe, cached.parent, row["method"], int(row["seed"]), None, "id", Path(tmp) / "trace.csv")
        trace_seconds = time.perf_counter() - start
        same = (Path(tmp) / "trace.csv").read_bytes() == cached.read_bytes()
        start = time.perf_counter()
        pipe._write_heldout(str(cached.parent / "model"), "id", Path(tmp) / "heldout.json")
        heldout_seconds = time.perf_counter() - start
    points = len(_read_lines(cached)) - 1
    return {"frontier_trace": cached.parent.name, "frontier_trace_points": points, "frontier_trace_seconds": trace_seconds,
            "frontier_seconds_per_point": trace_seconds / points, "frontier_trace_reproduced": same,
            "heldout_diagnostic_seconds": heldout_seconds}


SECTION = "## 6."


def stage_section(split: dict) -> list[str]:
    """Section 6 of ``results/performance.md``: the recorded split of one cold ``make reproduce`` by stage."""
    if not split:
        return [f"{SECTION} The cold reproduction by stage", "",
                "Pending: after a cold `make reproduce`, `.venv/bin/python benchmarks/stage_split.py --retime "
                "--write results/stage_split.json --report results/performance.md`.", ""]
    total = split["process_seconds"]
    seconds = dict(split["seconds"])
    estimated = split.get("estimated_seconds", {})
    other = seconds.pop(STAGES[-1])
    rows = [(stage, seconds[stage], f"{n} run{'s' if n != 1 else ''}") for stage in STAGES[:-1] for n in [split["runs"][stage]]]
    untimed = split["untimed"]
    if estimated:
        rows.append(("frontier traces (estimated)", estimated["frontier"],
                     f"{untimed['frontier_traces']} traces, {untimed['frontier_points']} points"))
        rows.append(("held-out diagnostics (estimated)", estimated["heldout_diagnostics"],
                     f"{untimed['heldout_diagnostics']} models"))
        other -= estimated["frontier"] + estimated["heldout_diagnostics"]
    rows.append(("notebooks, figures, reference samples, other (the rest)", other,
                 f"{untimed['reference_samples']} reference sample sets"))
    lines = [f"{SECTION} The cold reproduction by stage", "",
             f"One cold `make reproduce` ({split.get('date', 'date not recorded')}; {split['total_seconds'] / 60:.1f} min wall, "
             f"{split['workers']} notebooks at a time, each a one-thread process, so {total:.0f} process-seconds), split by "
             "the clocks its stage runs keep in `cache/` (`benchmarks/stage_split.py`, record in `results/stage_split.json`). "
             "Frontier traces and held-out diagnostics keep no clock: one of each is made again on one thread and "
             "multiplied by their count.", "",
             "| stage | process-seconds | share | work |", "| --- | --- | --- | --- |"]
    assert abs(sum(value for _, value, _ in rows) - total) < 1e-6 * max(total, 1.0), "the rows must add up to the run"
    for stage, value, work in rows:
        lines.append(f"| {stage} | {value:.0f} | {value / total:.0%} | {work} |")
    retimed = split.get("retimed")
    if retimed:
        same = "byte for byte the cached CSV" if retimed["frontier_trace_reproduced"] else "NOT the cached CSV"
        lines += ["", f"- re-timed: the frontier trace of policy run `{retimed['frontier_trace']}` "
                  f"({retimed['frontier_trace_points']} points, {retimed['frontier_trace_seconds']:.1f} s, {same}) and one "
                  f"held-out diagnostic ({retimed['heldout_diagnostic_seconds']:.2f} s)."]
    return lines + [""]


def put_section(report: Path, heading: str, lines: list[str]) -> None:
    """Replace (or append) the section starting with ``heading`` of the report at ``report`` by ``lines``."""
    from run import replace_section, write_report

    text = report.read_text() if report.exists() else ""
    write_report(report, replace_section(text, heading, "\n".join(lines)))


def publish(out: dict, write: str, report: str, heading: str, lines: list[str]) -> None:
    """Print a benchmark's record as JSON, write it to ``write`` and put ``lines`` into ``report`` under
    ``heading`` (each when given)."""
    text = json.dumps(out, indent=2)
    print(text)
    if write:
        from sepo.utils import write_text  # atomic: a crash never leaves half a record

        write_text(write, text + "\n")
    if report:
        put_section(Path(report), heading, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--timing", default="results/reproduce_timing.json")
    parser.add_argument("--retime", action="store_true", help="measure one frontier trace and held-out diagnostic again")
    parser.add_argument("--write", default="", help="also write the split to this JSON file")
    parser.add_argument("--report", default="", help="also put the split into this performance report (section 6)")
    args = parser.parse_args()
    timing = _read(Path(args.timing))
    end = timing.get("date")
    until = datetime.fromisoformat(end).timestamp() + 60 if end else None
    out = split_by_stage(args.cache, timing.get("seconds"), int(timing.get("workers", 1)), until)
    out["date"] = timing.get("date", "")
    if args.retime:
        measured = retime(args.cache, until)
        out["retimed"] = measured
        untimed = out["untimed"]
        out["estimated_seconds"] = {
            "frontier": measured["frontier_seconds_per_point"] * untimed["frontier_points"],
            "heldout_diagnostics": measured["heldout_diagnostic_seconds"] * untimed["heldout_diagnostics"]}
    publish(out, args.write, args.report, SECTION, stage_section(out))


if __name__ == "__main__":
    main()
