"""Where a cold ``make reproduce`` spent its time, by stage, from what the stage runs recorded in ``cache/``.

Every stage run writes its wall clock beside its results: the world's ``metrics.json`` (``timing/<step>_seconds``:
text, tokenizers, one SFT run per model, pair sampling, labels), each oracle's and policy's ``timing.json``
(``total_seconds``; an oracle's ``scoring_seconds`` is its token scoring) and each evaluation's ``timing.json``
(``sampling_seconds``, ``judging_seconds``, ``kl_seconds``). After a cold reproduction every run in the cache
was made by it, so these sum to the stages' share of the reproduction's wall time
(``results/reproduce_timing.json``); the rest ("notebooks, figures, other") is what ran outside stage runs:
kernels starting, reference samples for shared evaluations, analyses and figures.

``python benchmarks/stage_split.py [--cache cache] [--timing results/reproduce_timing.json]`` prints the split as JSON.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

STAGES = ("world", "SFT", "oracles", "scoring", "policies", "sampling", "judging", "KL", "notebooks, figures, other")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def split_by_stage(cache: str | Path, total_seconds: float | None = None) -> dict:
    """Seconds per stage summed over the runs in ``cache``, run counts, and the rest of ``total_seconds``."""
    cache = Path(cache)
    seconds: dict[str, float] = defaultdict(float)
    runs: dict[str, int] = defaultdict(int)
    for metrics_file in sorted(cache.glob("world/*/metrics.json")):
        for key, value in _read(metrics_file).items():
            if not (key.startswith("timing/") and key.endswith("_seconds")) or key == "timing/total_seconds":
                continue
            step = key[len("timing/"):-len("_seconds")]
            stage = "SFT" if step.startswith("sft_") else "world"
            seconds[stage] += value
            runs[stage] += step.startswith("sft_")
        runs["world"] += 1
    for timing_file in sorted(cache.glob("oracle/*/timing.json")):
        timing = _read(timing_file)
        scoring = timing.get("scoring_seconds", 0.0)
        seconds["oracles"] += timing.get("total_seconds", 0.0) - scoring
        seconds["scoring"] += scoring
        runs["oracles"] += 1
        runs["scoring"] += 1
    for timing_file in sorted(cache.glob("policy/*/timing.json")):
        seconds["policies"] += _read(timing_file).get("total_seconds", 0.0)
        runs["policies"] += 1
    for timing_file in sorted(cache.glob("evaluate/*/timing.json")):
        timing = _read(timing_file)
        for stage in ("sampling", "judging", "kl"):
            seconds["KL" if stage == "kl" else stage] += timing.get(f"{stage}_seconds", 0.0)
        for stage in ("sampling", "judging", "KL"):
            runs[stage] += 1
    untimed = len(list(cache.glob("evaluate/*/metrics.json"))) - len(list(cache.glob("evaluate/*/timing.json")))
    out = {"seconds": {s: seconds[s] for s in STAGES[:-1]}, "runs": {s: runs[s] for s in STAGES[:-1]},
           "evaluations_without_timing": untimed}
    if total_seconds is not None:
        out["total_seconds"] = total_seconds
        out["seconds"][STAGES[-1]] = total_seconds - sum(out["seconds"].values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--timing", default="results/reproduce_timing.json")
    args = parser.parse_args()
    total = _read(Path(args.timing)).get("seconds")
    print(json.dumps(split_by_stage(args.cache, total), indent=2))


if __name__ == "__main__":
    main()
