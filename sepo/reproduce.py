"""The whole mini-world reproduction: run every notebook with papermill, then write the claims.

``python -m sepo.reproduce`` (the README's main command, via ``make reproduce``) executes each
notebook of ``notebooks/`` with its parameters from ``configs/<tier>/<name>.yaml``; each notebook
writes ``results/<name>/`` (executed notebook, ``metrics.json``, a markdown table, figures). Then
:mod:`sepo.claims` reads those metrics and writes ``results/claims.md``. Work whose config has not
changed is cached under ``cache/`` by every stage, so a second run only re-executes notebooks.

Notebooks run side by side, ``--workers`` at a time (default: one per CPU core), each computing on
one thread (``threads`` of :class:`sepo.pipeline.ExperimentConfig`): the tiny models of the mini
world use two cores better as two processes than as two threads of one. They share one cache: a
run is built once, under a lock, and runs that two notebooks both need are split between them
(:func:`sepo.cache.share_work`), so every number is the one a single worker would compute. Every kernel
computes on the same CPU code paths (:data:`PINNED_KERNELS`) on whatever machine it runs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import yaml

from sepo.cache import usage_lines, usage_since
from sepo.utils import write_json, write_text

ROOT = Path(__file__).resolve().parent.parent

# The CPU code paths every number of the reproduction is computed on, unless the environment names others
# (``make stability`` does): torch's own kernels at AVX2 (``ATEN_CPU_CAPABILITY``; a CPU with AVX-512 would
# otherwise take those, which round differently) and MKL's matrix products on its AVX2 branch (``MKL_CBWR``;
# MKL otherwise picks a path per CPU model; where it cannot honour AVX2 it keeps one fixed path of its own,
# recorded as AUTO). Both are in every cache key (:func:`sepo.cache.numerics`).
PINNED_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}

# the order in which notebooks are started: the longest first (the main table's learning-rate search, which
# every later notebook reads, is shared with whichever notebook needs it meanwhile); results keep NOTEBOOKS' order
START_ORDER = ("04_main_table", "02_oracle", "06_weak_to_strong", "05_ablations", "07_ood_overoptimization",
               "01_walkthrough", "09_cross_tokenizer", "08_selective_dpo", "03_token_rewards", "10_benchmarks")

NOTEBOOKS = (
    "01_walkthrough",
    "02_oracle",
    "03_token_rewards",
    "04_main_table",
    "05_ablations",
    "06_weak_to_strong",
    "07_ood_overoptimization",
    "08_selective_dpo",
    "09_cross_tokenizer",
    "10_benchmarks",
)


def run_notebook(name: str, tier: str, results: Path, root: Path = ROOT, overrides: dict | None = None) -> float:
    """Execute ``notebooks/<name>.ipynb`` with ``configs/<tier>/<name>.yaml``; return seconds taken.

    The executed copy is written to ``results/<name>/<name>.ipynb`` with the project's absolute path
    removed (papermill records where it ran), so results hold no path of the machine that made them.
    """
    import papermill

    config = root / "configs" / tier / f"{name}.yaml"
    parameters = yaml.safe_load(config.read_text()) if config.exists() else {}
    out_dir = results / name
    parameters = {**(parameters or {}), **(overrides or {}), "results_dir": _project_relative(out_dir, root)}
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    executed = out_dir / f"{name}.ipynb"
    papermill.execute_notebook(
        str(root / "notebooks" / f"{name}.ipynb"),
        str(executed),
        parameters=parameters,
        cwd=str(root),
        progress_bar=False,
        kernel_name="python3",
        config=kernel_config(),
    )
    write_text(executed, executed.read_text().replace(str(root.resolve()) + "/", "").replace(str(root.resolve()), "."))
    return time.perf_counter() - start


def run_notebooks(names: list[str], tier: str, results: Path, workers: int, overrides: dict | None = None) -> dict[str, float]:
    """Run ``names`` with up to ``workers`` at a time (in :data:`START_ORDER`); seconds taken per notebook."""
    import concurrent.futures
    import multiprocessing

    order = sorted(names, key=lambda n: START_ORDER.index(n) if n in START_ORDER else len(START_ORDER))
    timing: dict[str, float] = {}
    if workers <= 1:
        for i, name in enumerate(order, 1):
            print(f"[{i}/{len(order)}] {name} ...", flush=True)
            timing[name] = run_notebook(name, tier, results, overrides=overrides)
            print(f"[{i}/{len(order)}] {name} done in {timing[name]:.0f} s", flush=True)
        return timing
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_notebook, name, tier, results, ROOT, overrides): name for name in order}
        print(f"{len(order)} notebooks, {workers} at a time: {', '.join(order)}", flush=True)
        for future in concurrent.futures.as_completed(futures):
            name = futures[future]
            timing[name] = future.result()  # a failed notebook stops the reproduction with its error
            print(f"[{len(timing)}/{len(order)}] {name} done in {timing[name]:.0f} s", flush=True)
    return {name: timing[name] for name in names}


def _project_relative(path: Path, root: Path) -> str:
    path = Path(path).resolve()
    return path.relative_to(root.resolve()).as_posix() if path.is_relative_to(root.resolve()) else str(path)


def kernel_config():
    """Kernel-manager settings: CurveZMQ keys for the kernel's sockets when pyzmq supports them (ipykernel
    warns on every start of a kernel whose local TCP sockets are unencrypted)."""
    import zmq
    from traitlets.config import Config

    return Config({"KernelManager": {"transport_encryption": "auto" if zmq.has("curve") else "disabled"}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the notebooks and write results/claims.md")
    parser.add_argument("--tier", default="mini", help="configs/<tier>/ holds the notebooks' parameters")
    parser.add_argument("--results", default=None, help="where results land (default: results/, or results/paper/ "
                                                          "at the paper tier)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these notebooks")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, len(NOTEBOOKS)),
                        help="notebooks run side by side (default: one per CPU core)")
    parser.add_argument("-f", "--parameters", default=None,
                        help="a YAML of parameters that override configs/<tier>/<notebook>.yaml (e.g. seeds: [0])")
    args = parser.parse_args(argv)
    overrides = yaml.safe_load(Path(args.parameters).read_text()) if args.parameters else {}
    if not isinstance(overrides, dict):
        raise SystemExit(f"{args.parameters}: expected a mapping of parameters")
    results = Path(args.results) if args.results else ROOT / "results" / ("paper" if args.tier == "paper" else "")
    names = [n for n in NOTEBOOKS if not args.only or n in args.only]
    if args.tier != "mini":  # a notebook without configs/<tier>/<name>.yaml is mini-only (it reads gold credit)
        missing = [n for n in names if not (ROOT / "configs" / args.tier / f"{n}.yaml").exists()]
        if args.only and missing:
            raise SystemExit(f"no configs/{args.tier}/<name>.yaml for {missing}: these notebooks run on the mini tier only")
        names = [n for n in names if n not in missing]
    for name, value in PINNED_KERNELS.items():  # read by torch and MKL in every notebook's kernel, which inherits them
        os.environ.setdefault(name, value)
    # Progress bars inside a notebook's kernel are saved into the executed notebook as widget state (megabytes per
    # notebook) and seen by nobody; the reproduction reports one line per notebook instead.
    os.environ.setdefault("SEPO_QUIET", "1")
    if args.tier != "paper":  # the mini world needs nothing from the Hub; the paper tier may fetch models and data
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    cache = ROOT / "cache"
    usage_start = usage_lines(cache)  # cached_run logs every stage call it serves: built or reused
    total = time.perf_counter()
    timing = run_notebooks(names, args.tier, results, max(1, args.workers), overrides)
    from sepo.claims import write_claims

    path = write_claims(results)
    seconds = time.perf_counter() - total
    if not args.only and not overrides and args.tier == "mini":  # the wall time of the main command, read by benchmarks/run.py
        usage = usage_since(cache, usage_start)
        cold = usage["reused_older"] == 0 and usage["built"] > 0
        record = {"command": "make reproduce", "tier": args.tier, "seconds": seconds, "workers": max(1, args.workers),
                  "notebooks": timing,
                  "stage_runs": usage,
                  "cache": "cold (every stage run it used was built in this run)" if cold
                  else f"warm ({usage['reused_older']} reads of stage runs made before this run; {usage['built']} built)",
                  "date": datetime.datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count()}
        write_json(results / "reproduce_timing.json", record)
    print(f"claims written to {path}; whole run {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
