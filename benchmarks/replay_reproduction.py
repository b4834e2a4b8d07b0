"""An older commit's ``make reproduce``, its stage calls replayed on the older code and on this code.

The speed target of the reproduction is stated for the *old* reproduction (its notebooks and configs) on the
landed code against the same on the new code. Those notebooks call an API this code no longer has, so the
comparison is made one level down, on the calls that do the work. After a cold ``make reproduce`` of the older
commit in its own checkout, every stage run in its ``cache/`` holds the config it ran with (``config.yaml``):
every oracle, every policy, every evaluation, and the reference samples the evaluations share
(``derived/*/reference_outputs``). This script runs all of them again, over the older run's world (its SFT
models, pairs and prompts, read only), into fresh directories:

* on the older code, as its reproduction ran them: one process, one call after another, on 2 threads;
* on this code, as this reproduction runs: two one-thread processes side by side (each stage call as the cache
  starts it, after :func:`sepo.utils.freeze_import_heap`), each phase split between them
  by the older side's seconds (longest first). A phase holds the runs whose inputs the earlier phases made
  (oracles and reference samples first; then policies on oracles' scores and evaluations that need no policy;
  then policies that need another as reference, and evaluations of policies; ...). Each older config is translated field by field into this code's config (selection ``sepo`` ->
  selector ``topk`` with ``{k_w, k_l}``, ``adaptive``'s ``p`` -> ``mass``, Selective-DPO's ``quantile`` q ->
  ``k = 1 - q``); the run-time settings this code's pipeline adds are applied as it applies them
  (``length_buckets`` from ``configs/mini/base.yaml``, reference log-probs computed once per reference,
  ``eval_batch_size`` prompts a sampling batch). What a run trains on and how long does not change.

A policy trained on an oracle's scores reads the scores of that oracle's replay on the same side, and an
evaluation evaluates that side's replayed policy. The older side's replayed metrics are compared with the
older cold run's (same code, same configs: they should be equal, which checks that the replay is the same work).

Whole-command estimate: the older ``make reproduce``'s wall time minus the older side's replay plus this
side's replay, i.e. the world build, kernels, analyses and figures of the older notebooks are counted at their
older cost (a conservative estimate: this code also builds its world faster).

With ``--count-flops`` this code's calls run a third time (untimed, under ``FlopCounterMode``: matrix products and
attention) and the record says what the machine allows: those FLOPs at one thread's fp32 matmul rate on each of
the two processes, and the share of that rate the stage calls would need for the target.

``python benchmarks/replay_reproduction.py --old DIR [--new .] [--count-flops] [--write results/replay_side_by_side.json]
[--report results/performance.md]`` (``DIR``: the older checkout, with its ``.venv``, its ``cache/`` and
``results/reproduce_timing.json`` from a cold ``make reproduce``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

DRIVER = r"""
import json, sys, time
from pathlib import Path
spec = json.loads(Path(sys.argv[1]).read_text())
sys.path.insert(0, spec["root"])
import torch
torch.set_num_threads(spec["threads"])
import contextlib
if spec.get("count"):
    sys.path.insert(0, spec["root"] + "/benchmarks")
    from reproduction_rate import flop_counter
from sepo.evaluate import EvalConfig, run_evaluate, sample_reference_outputs
from sepo.oracle import OracleConfig, run_oracle
from sepo.policy import PolicyConfig, run_policy
from sepo.world.judge import GoldJudge
try:  # this code's cached stage calls (sepo.cache.cached_run) freeze the import heap first; the older code has no such step
    from sepo.utils import freeze_import_heap
except ImportError:
    freeze_import_heap = lambda: None
done = []
for job in spec["jobs"]:
    kind, values = job["kind"], job["config"]
    freeze_import_heap()
    counter = flop_counter() if spec.get("count") else None
    start = time.perf_counter()
    with counter or contextlib.nullcontext():
        if kind == "oracle":
            run_oracle(OracleConfig.from_dict(values))
        elif kind == "policy":
            run_policy(PolicyConfig.from_dict(values))
        elif kind == "reference":
            Path(job["path"]).parent.mkdir(parents=True, exist_ok=True)
            sample_reference_outputs(EvalConfig.from_dict(values), Path(job["path"]))
        else:
            run_evaluate(EvalConfig.from_dict(values), gold=GoldJudge(**job["judge"]))
    done.append({"id": job["id"], "seconds": time.perf_counter() - start,
                 **({"gflop": counter.get_total_flops() / 1e9} if counter else {})})
    Path(spec["result"]).write_text(json.dumps(done))
"""

RUN_OUTPUTS = ("model", "checkpoints", "scored")  # what a stage run writes that another reads (mapped to its replay)
KINDS = ("oracle", "reference", "policy", "evaluate")
OUT_FIELD = {"oracle": "output_dir", "policy": "output_dir", "evaluate": "out_dir"}
ENV = {"SEPO_QUIET": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
SECTION = "## 8."
TARGET = 2.0  # the older make reproduce on the older code / on this code


def old_jobs(cache: Path) -> list[dict]:
    """Every finished stage run of the older cache, with its config, plus one job per shared reference sample."""
    jobs, references = [], {}
    for kind in ("oracle", "policy", "evaluate"):
        for run in sorted((cache / kind).glob("*/metrics.json")):
            config = yaml.safe_load((run.parent / "config.yaml").read_text())
            jobs.append({"id": f"{kind}/{run.parent.name}", "kind": kind, "config": config, "run": str(run.parent)})
            if kind == "evaluate" and config.get("reference_outputs"):
                references.setdefault(config["reference_outputs"], config)
    for path, config in sorted(references.items()):
        jobs.append({"id": f"reference/{Path(path).stem}", "kind": "reference", "config": dict(config), "path": path})
    return jobs


def _rest(value, path: str) -> str | None:
    """What follows ``path`` in ``value`` ("" for the path itself, "/sub/..." inside it), or None elsewhere."""
    if isinstance(value, str) and (value == path or value.startswith(path + "/")):
        return value[len(path):]
    return None


def _paths(jobs: list[dict]) -> dict[str, str]:
    """Every run directory and reference sample of the older cache, by path: its job's id."""
    paths = {job["run"]: job["id"] for job in jobs if "run" in job}
    paths.update({job["path"]: job["id"] for job in jobs if job["kind"] == "reference"})
    return paths


def _reads(job: dict, paths: dict[str, str]) -> dict[str, str]:
    """The other runs a job's config names, each with the part of it read ("" for the run itself). A reference
    sample reads the reference only (its config is an evaluation's)."""
    out = {}
    for key, value in job["config"].items():
        if job["kind"] == "reference" and key in ("model_dir", "out_dir", "reference_outputs"):
            continue
        for path, name in paths.items():
            rest = _rest(value, path)
            if rest is not None and name != job["id"]:
                out[name] = rest
    return out


def notebook_made(jobs: list[dict]) -> set[str]:
    """Runs that read what a notebook put inside another run's directory (09's scores carried to another tokenizer,
    ``oracle/*/carried_to_a``), and the runs that read those: left out of the replay (this code's policy stage
    needs a data record that the older notebook did not write), so their time stays in the rest, at the older cost."""
    paths = _paths(jobs)
    reads = {job["id"]: _reads(job, paths) for job in jobs}
    left = {name for name, named in reads.items() if any(rest and rest.split("/")[1] not in RUN_OUTPUTS
                                                          for rest in named.values())}
    while True:
        more = {name for name, named in reads.items() if name not in left and left & named.keys()}
        if not more:
            return left
        left |= more


def levels(jobs: list[dict]) -> dict[str, int]:
    """Each job's phase: 0 if its config names no other run of the cache, else one more than the latest run it names
    (an oracle's scores, a policy as another's reference or as the evaluated model, a shared reference sample)."""
    paths = _paths(jobs)
    needs = {job["id"]: set(_reads(job, paths)) for job in jobs}
    level: dict[str, int] = {}

    def of(name: str, seen: tuple = ()) -> int:
        if name in seen:
            raise SystemExit(f"runs that need each other: {' -> '.join(seen + (name,))}")
        if name not in level:
            level[name] = 1 + max((of(n, seen + (name,)) for n in needs[name]), default=-1)
        return level[name]

    for job in jobs:
        of(job["id"])
    return level


def judge_params(cache: Path) -> dict:
    """The gold judge's parameters, read from the older world's config (one world in a reproduction's cache)."""
    configs = sorted(cache.glob("world/*/config.yaml"))
    world = yaml.safe_load(configs[0].read_text())
    names = {"judge_off_subject_penalty": "off_subject_penalty", "judge_repeat_weight": "repeat_weight",
             "judge_repeat_allowance": "repeat_allowance", "judge_overrun_weight": "overrun_weight",
             "judge_max_words": "max_words", "judge_junk_weight": "junk_weight"}
    return {new: world[old] for old, new in names.items()}


def to_new(kind: str, config: dict, base: dict) -> dict:
    """An older stage config as this code's config of the same run (see the module's docstring)."""
    config = dict(config)
    if kind == "oracle":
        config["length_buckets"] = base["length_buckets"]
    if kind == "policy":
        selection = config.pop("selection", "sepo")
        k_w, k_l, p = config.pop("k_w", 0.3), config.pop("k_l", 0.3), config.pop("p", 0.5)
        config["selector"], config["selection_kwargs"] = {
            "sepo": ("topk", {"k_w": k_w, "k_l": k_l}), "threshold": ("threshold", {"k_w": k_w, "k_l": k_l}),
            "random": ("random", {"k_w": k_w, "k_l": k_l}), "adaptive": ("adaptive", {"mass": p})}[selection]
        kwargs = dict(config.get("loss_kwargs") or {})
        if config["loss"] == "selective_dpo" and "quantile" in kwargs:
            kwargs["k"] = 1 - kwargs.pop("quantile")
        config["loss_kwargs"] = kwargs
        config["length_buckets"] = base["length_buckets"]
    if kind in ("evaluate", "reference"):
        config["batch_size"] = base["eval_batch_size"]
    return config


def side_jobs(jobs: list[dict], out: Path, new_base: dict | None, judge: dict) -> list[dict]:
    """The jobs of one side, writing under ``out``; run, data and reference paths of the older cache mapped to
    that side's replays."""
    runs = {job["run"]: str(out / job["id"]) for job in jobs if "run" in job}
    refs = {job["path"]: str(out / (job["id"] + ".json")) for job in jobs if job["kind"] == "reference"}

    def mapped(value):
        if not isinstance(value, str):
            return value
        if value in refs:
            return refs[value]
        for old, new in runs.items():  # what the run itself writes; not what a notebook put beside it later
            rest = _rest(value, old)
            if rest is not None and (not rest or rest.split("/")[1] in RUN_OUTPUTS):
                return new + rest
        return value

    result = []
    for job in jobs:
        config = {k: mapped(v) for k, v in job["config"].items()}
        if job["kind"] in OUT_FIELD:
            config[OUT_FIELD[job["kind"]]] = str(out / job["id"])
        else:
            config["out_dir"] = "-"
        if new_base is not None:
            config = to_new(job["kind"], config, new_base)
            if job["kind"] in ("oracle", "policy") and (job["kind"] == "oracle" or config.get("reference_path")):
                config["reference_cache_dir"] = str(out / "reference_logps")
        item = {"id": job["id"], "kind": job["kind"], "config": config}
        if job["kind"] == "reference":
            item["path"] = refs[job["path"]]
        if job["kind"] == "evaluate":
            item["judge"] = judge
        result.append(item)
    return result


def run_workers(checkout: Path, batches: list[list[dict]], threads: int, tmp: Path, tag: str,
                count: bool = False) -> tuple[float, list[dict]]:
    """Run each batch of jobs in its own process of ``checkout``'s environment, all at once; returns the wall
    time until the last one finished and every job's seconds (and, with ``count``, its GFLOP: the jobs then run
    under ``FlopCounterMode``, so their seconds are not the stage's)."""
    python = checkout / ".venv" / "bin" / "python"
    procs, results = [], []
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        spec = tmp / f"{tag}_{i}.json"
        result = tmp / f"{tag}_{i}_result.json"
        spec.write_text(json.dumps({"root": str(checkout), "threads": threads, "jobs": batch, "result": str(result),
                                    "count": count}))
        log = open(tmp / f"{tag}_{i}.log", "w")
        procs.append((subprocess.Popen([str(python), "-c", DRIVER, str(spec)], stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, **ENV}), result, log))
    for proc, result, log in procs:
        code = proc.wait()
        log.close()
        if code:
            raise SystemExit(f"{checkout} {tag}: a worker failed:\n{Path(log.name).read_text()[-3000:]}")
        results += json.loads(result.read_text()) if result.exists() else []
    return time.perf_counter() - start, results


def split_longest_first(jobs: list[dict], weights: dict[str, float], workers: int) -> list[list[dict]]:
    """Jobs into ``workers`` batches of near-equal total weight (longest first, each to the lightest batch)."""
    batches, loads = [[] for _ in range(workers)], [0.0] * workers
    for job in sorted(jobs, key=lambda j: -weights.get(j["id"], 0.0)):
        i = loads.index(min(loads))
        batches[i].append(job)
        loads[i] += weights.get(job["id"], 0.0)
    return [b for b in batches if b]


def same_metrics(a: dict, b: dict, tol: float = 1e-9) -> bool:
    """Two runs' metrics equal up to ``tol`` in every number (clocks left out)."""
    def numbers(d):
        return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not any(
            w in k for w in ("runtime", "seconds", "per_second", "flos", "time"))}
    x, y = numbers(a), numbers(b)
    return x.keys() == y.keys() and all(abs(x[k] - y[k]) <= tol * max(1.0, abs(x[k])) for k in x)


def flop_bound(estimate: dict, new_seconds: float, gflop: dict[str, float], rate: float, workers: int = 2,
               target: float = TARGET) -> dict:
    """What the machine's matrix-product rate allows: the stage calls' counted FLOPs (``gflop``, by job) done at
    ``rate`` GFLOP/s (one thread's fp32 rate) on each of ``workers`` processes, perfectly balanced, with the rest of
    the command at its older cost. ``needed_fraction``: the share of that rate the stage calls must reach, all of
    them on average, for the whole command to be ``target`` times faster; ``achieved_fraction``: the share this
    code's replay reached."""
    total = sum(gflop.values())
    at_rate = total / (workers * rate)
    budget = estimate["old_seconds"] / target - estimate["rest_seconds"]  # stage-call seconds the target leaves
    by_kind: dict[str, float] = {}
    for job, value in gflop.items():
        by_kind[job.split("/")[0]] = by_kind.get(job.split("/")[0], 0.0) + value
    return {"gflop": total, "gflop_by_kind": by_kind, "rate_gflops_1_thread": rate, "workers": workers,
            "seconds_at_rate": at_rate, "achieved_fraction": at_rate / new_seconds,
            "whole_seconds_at_rate": estimate["rest_seconds"] + at_rate,
            "max_speedup": estimate["old_seconds"] / (estimate["rest_seconds"] + at_rate),
            "stage_budget_seconds": budget, "needed_fraction": at_rate / budget if budget > 0 else None}


def section(out: dict) -> list[str]:
    """Section 8 of ``results/performance.md``."""
    if not out:
        return [f"{SECTION} The landed commit's make reproduce, replayed on this code", "",
                "Not recorded: `.venv/bin/python benchmarks/replay_reproduction.py --old DIR --write "
                "results/replay_side_by_side.json --report results/performance.md`.", ""]
    o, n = out["old"], out["new"]
    lines = [f"{SECTION} The landed commit's make reproduce, replayed on this code", "",
             f"`benchmarks/replay_reproduction.py`, {out['date']}: a cold `make reproduce` of `{out['commits']['old']}` "
             f"(its notebooks and configs) took {out['old_reproduce_seconds'] / 60:.1f} min on this machine "
             f"({out.get('old_reproduce_date') or 'date not recorded'}). Its "
             f"{out['jobs']} stage calls ({', '.join(f'{v} {k}' for k, v in out['counts'].items())}) were run again "
             f"from its cache's configs ({out['left_out']} more, runs on scores a notebook carried to another tokenizer "
             "and their evaluations, were left out: their time stays in the rest below, at the older cost): "
             f"on `{out['commits']['old']}` as its reproduction runs them (one process, "
             f"2 threads, one after another) and on `{out['commits']['new']}` as this reproduction runs (two "
             "one-thread processes side by side), one side after the other on this machine. "
             f"Replayed metrics of the older side equal to its cold run's: {out['old_metrics_equal']} of "
             f"{out['old_metrics_compared']}; training runs with as many optimizer steps on both sides: "
             f"{out['training_steps_equal']} of {out['training_runs']}.", "",
             "| phase | older code s | this code s | speed-up |", "| --- | --- | --- | --- |"]
    for phase in o["phases"]:
        lines.append(f"| {phase} | {o['phases'][phase]:.0f} | {n['phases'][phase]:.0f} | "
                     f"{o['phases'][phase] / n['phases'][phase]:.2f}x |")
    lines.append(f"| all stage calls | {o['seconds']:.0f} | {n['seconds']:.0f} | {o['seconds'] / n['seconds']:.2f}x |")
    if o.get("jobs") and n.get("jobs"):
        lines += ["", "By kind of call, the calls' own seconds summed (older: each call on 2 threads; this code: each on 1 "
                  "thread, two at a time, so a ratio of 1 here is a 2x gain in wall time):", "",
                  "| calls | older code s | this code s | older / this |", "| --- | --- | --- | --- |"]
        for kind in KINDS:
            ids = [i for i in o["jobs"] if i.split("/")[0] == kind and i in n["jobs"]]
            if ids:
                a, b = sum(o["jobs"][i] for i in ids), sum(n["jobs"][i] for i in ids)
                lines.append(f"| {len(ids)} {kind} | {a:.0f} | {b:.0f} | {a / b:.2f} |")
    est = out["estimate"]
    lines += ["", f"Whole command: the older `make reproduce` took {est['old_seconds']:.0f} s; with its stage calls at "
              f"this code's cost and the rest (world build, kernels, analyses, figures: {est['rest_seconds']:.0f} s) "
              f"at the older cost, {est['new_seconds']:.0f} s: **{est['speedup']:.2f}x** against the target "
              f"{out['target']:.0f}x (**{'met' if est['speedup'] >= out['target'] else 'missed'}**).", ""]
    if out.get("flops"):
        f = out["flops"]
        kinds = ", ".join(f"{kind} {value / 1000:.1f}" for kind, value in f["gflop_by_kind"].items())
        needed = (f"{f['needed_fraction']:.2f} of that rate, on average over every call"
                  if f["needed_fraction"] is not None else "more than the rest of the command leaves")
        lines += [f"What the machine allows: the replayed calls do {f['gflop'] / 1000:.1f} TFLOP of matrix products and "
                  f"attention ({kinds}; counted in a third, untimed pass of this code under `FlopCounterMode`). At one "
                  f"thread's fp32 rate at the issue's shape ({f['rate_gflops_1_thread']:.0f} GFLOP/s, measured after the "
                  f"replay) on each of {f['workers']} processes, perfectly balanced, they would take "
                  f"{f['seconds_at_rate']:.0f} s; this code's replay reached {f['achieved_fraction']:.2f} of that. "
                  f"With the rest at its older cost the whole command could at best take {f['whole_seconds_at_rate']:.0f} s "
                  f"({f['max_speedup']:.2f}x). For {out['target']:.0f}x the stage calls must fit in "
                  f"{f['stage_budget_seconds']:.0f} s, i.e. run at {needed}.", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="older checkout with .venv, cache/ and results/ of a cold make reproduce")
    parser.add_argument("--new", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--only", default="", help="comma-separated job id prefixes (a quick check of the replay)")
    parser.add_argument("--work-dir", default="", help="keep the replayed runs here (default: a temporary directory)")
    parser.add_argument("--write", default="")
    parser.add_argument("--report", default="")
    parser.add_argument("--count-flops", action="store_true",
                        help="also count this code's calls' FLOPs (a third, untimed pass) and bound what the matmul rate allows")
    args = parser.parse_args()
    old, new = Path(args.old).resolve(), Path(args.new).resolve()
    cache = old / "cache"
    needed = {old / ".venv" / "bin" / "python": "its virtual environment, which make creates",
              old / "results" / "reproduce_timing.json": "the record of a cold make reproduce",
              next(iter(sorted(cache.glob("world/*/config.yaml"))), cache / "world"): "the world that reproduction built"}
    for path, what in needed.items():  # checked before anything runs or is written
        if not path.exists():
            raise SystemExit(f"--old {args.old}: {path} is missing ({what}); run a cold `make reproduce` there first")
    jobs = old_jobs(cache)
    left_out = notebook_made(jobs)
    jobs = [j for j in jobs if j["id"] not in left_out]
    if args.only:
        jobs = [j for j in jobs if any(j["id"].startswith(p) for p in args.only.split(","))]
    judge, level = judge_params(cache), levels(jobs)
    new_base = yaml.safe_load((new / "configs" / "mini" / "base.yaml").read_text())
    commits = {name: subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip() for name, path in (("old", old), ("new", new))}
    out = {"commits": commits, "jobs": len(jobs), "left_out": len(left_out), "counts": {}, "target": TARGET,
           "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for job in jobs:
        out["counts"][job["kind"]] = out["counts"].get(job["kind"], 0) + 1
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.work_dir or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        sides = {"old": side_jobs(jobs, tmp / "old", None, judge),
                 "new": side_jobs(jobs, tmp / "new", new_base, judge)}
        weights: dict[str, float] = {}
        passes = [("old", old, 2, 1), ("new", new, 1, 2)]
        if args.count_flops:
            sides["counted"] = side_jobs(jobs, tmp / "counted", new_base, judge)
            passes.append(("counted", new, 1, 2))
        for side, checkout, threads, workers in passes:
            record = {"phases": {}, "jobs": {}, "gflop": {}}
            for phase in range(max(level.values()) + 1):
                batch = [j for j in sides[side] if level[j["id"]] == phase]
                label = f"{phase + 1}: " + " + ".join(f"{k} {sum(j['kind'] == k for j in batch)}" for k in KINDS
                                                       if any(j["kind"] == k for j in batch))
                print(f"[replay] {side}: phase {label}", flush=True)
                wall, done = run_workers(checkout, split_longest_first(batch, weights, workers), threads, tmp,
                                         f"{side}_{phase}", count=side == "counted")
                record["phases"][label] = wall
                record["jobs"].update({d["id"]: d["seconds"] for d in done})
                record["gflop"].update({d["id"]: d["gflop"] for d in done if "gflop" in d})
            record["seconds"] = sum(record["phases"].values())
            if side == "old":
                weights = record["jobs"]
                compared = [j for j in jobs if "run" in j]
                out["old_metrics_compared"] = len(compared)
                out["old_metrics_equal"] = sum(
                    same_metrics(json.loads(Path(j["run"], "metrics.json").read_text()),
                                 json.loads((tmp / "old" / j["id"] / "metrics.json").read_text())) for j in compared)
            if side == "new":  # the same work: every training run took as many optimizer steps on both sides
                steps = [[json.loads((tmp / s / j["id"] / "metrics.json").read_text()).get("train/global_step")
                          for s in ("old", "new")] for j in jobs if j["kind"] in ("oracle", "policy")]
                out["training_runs"], out["training_steps_equal"] = len(steps), sum(a == b for a, b in steps)
            if side == "counted":
                counted = record["gflop"]
            else:
                record.pop("gflop")
                out[side] = record
    timing = json.loads((old / "results" / "reproduce_timing.json").read_text())
    rest = timing["seconds"] - out["old"]["seconds"]
    out["old_reproduce_seconds"], out["old_reproduce_date"] = timing["seconds"], timing.get("date", "")
    out["estimate"] = {"old_seconds": timing["seconds"], "rest_seconds": rest, "new_seconds": rest + out["new"]["seconds"],
                       "speedup": timing["seconds"] / (rest + out["new"]["seconds"])}
    if args.count_flops:  # one thread's fp32 rate at the shape, in a fresh process of this code
        shape = "1333:176:704"
        rate = subprocess.run([str(new / ".venv" / "bin" / "python"), str(new / "benchmarks" / "reproduction_rate.py"),
                               "--what", "matmul", "--shapes", shape, "--threads", "1"], capture_output=True, text=True,
                              check=True, env={**os.environ, **ENV}).stdout
        out["flops"] = flop_bound(out["estimate"], out["new"]["seconds"], counted,
                                  json.loads(rate.strip().splitlines()[-1])[shape]["float32"])
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from stage_split import publish

    publish(out, args.write, args.report, SECTION, section(out))


if __name__ == "__main__":
    main()
