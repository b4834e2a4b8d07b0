"""The whole reproduction of two commits, one after the other on this machine, each cold in a fresh clone.

``python benchmarks/side_by_side.py --base COMMIT [--head HEAD]`` clones the project twice (``git clone`` of
this repository, so only committed files take part), makes each clone's virtual environment, then runs
``make reproduce`` in each from an empty cache, the head first, and writes both wall times and their ratio
to ``results/reproduce_side_by_side.json``. Each clone's own ``results/reproduce_timing.json`` says whether
its run was cold; both are copied into the record. The clones stay under ``--workdir`` (``build/`` is not
committed), so the head's results can be looked at afterwards.

The two runs do not overlap (each would slow the other); the machine's load average before and after
each is recorded, as it is for every other benchmark.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, SEPO_QUIET="1"))
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} in {cwd} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def work(clone: Path) -> dict:
    """What a clone's reproduction is asked to do, where commits may differ: its main table's methods and frontier."""
    import yaml

    config = yaml.safe_load((clone / "configs" / "mini" / "04_main_table.yaml").read_text()) or {}
    return {key: config.get(key) for key in ("methods", "frontier_methods")}


def reproduce(commit: str, clone: Path) -> dict:
    """Clone ``commit`` into ``clone``, install, run ``make reproduce`` cold; what it took."""
    if clone.exists():
        shutil.rmtree(clone)
    subprocess.run(["git", "clone", "--quiet", "--no-local", str(ROOT), str(clone)], check=True)
    git("checkout", "--quiet", commit, cwd=clone)
    record = {"commit": git("rev-parse", "--short", "HEAD", cwd=clone), "work": work(clone)}
    record["install_seconds"] = timed(["make", ".venv/.installed"], clone, clone.parent / f"{clone.name}-install.log")
    record["load_before"] = load()
    record["reproduce_seconds"] = timed(["make", "reproduce"], clone, clone.parent / f"{clone.name}-reproduce.log")
    record["load_after"] = load()
    timing = clone / "results" / "reproduce_timing.json"
    record["reproduce_timing"] = json.loads(timing.read_text()) if timing.exists() else None
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare against (e.g. the landed one)")
    parser.add_argument("--head", default="HEAD")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "side_by_side")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "reproduce_side_by_side.json")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    runs = {}
    for label, commit in (("head", args.head), ("base", args.base)):
        print(f"[side by side] {label} = {commit}: make reproduce, cold, in a fresh clone", flush=True)
        runs[label] = reproduce(git("rev-parse", commit), args.workdir / label)
        print(f"[side by side] {label}: {runs[label]['reproduce_seconds'] / 60:.1f} min", flush=True)
    record = {"command": "make reproduce", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "cpus": os.cpu_count(), "runs": runs,
              "speedup": runs["base"]["reproduce_seconds"] / runs["head"]["reproduce_seconds"]}
    sys.path.insert(0, str(ROOT))
    from sepo.utils import write_json

    write_json(args.out, record)
    print(f"[side by side] base / head = {record['speedup']:.2f}x; written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
