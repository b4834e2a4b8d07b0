"""The whole mini-world reproduction: run every notebook with papermill, then write the claims.

``python -m sepo.reproduce`` (the README's main command, via ``make reproduce``) executes each
notebook of ``notebooks/`` with its parameters from ``configs/<tier>/<name>.yaml``; each notebook
writes ``results/<name>/`` (executed notebook, ``metrics.json``, a markdown table, figures). Then
:mod:`sepo.claims` reads those metrics and writes ``results/claims.md``. Work whose config has not
changed is cached under ``cache/`` by every stage, so a second run only re-executes notebooks.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import yaml

from sepo.utils import write_json

ROOT = Path(__file__).resolve().parent.parent

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


def run_notebook(name: str, tier: str, results: Path, root: Path = ROOT) -> float:
    """Execute ``notebooks/<name>.ipynb`` with ``configs/<tier>/<name>.yaml``; return seconds taken."""
    import papermill

    config = root / "configs" / tier / f"{name}.yaml"
    parameters = yaml.safe_load(config.read_text()) if config.exists() else {}
    parameters = {**(parameters or {}), "results_dir": str(results / name)}
    out_dir = results / name
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    papermill.execute_notebook(
        str(root / "notebooks" / f"{name}.ipynb"),
        str(out_dir / f"{name}.ipynb"),
        parameters=parameters,
        cwd=str(root),
        progress_bar=False,
        kernel_name="python3",
        config=kernel_config(),
    )
    return time.perf_counter() - start


def kernel_config():
    """Kernel-manager settings: CurveZMQ keys for the kernel's sockets when pyzmq supports them (ipykernel
    warns on every start of a kernel whose local TCP sockets are unencrypted)."""
    import zmq
    from traitlets.config import Config

    return Config({"KernelManager": {"transport_encryption": "auto" if zmq.has("curve") else "disabled"}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the notebooks and write results/claims.md")
    parser.add_argument("--tier", default="mini", help="configs/<tier>/ holds the notebooks' parameters")
    parser.add_argument("--results", default=str(ROOT / "results"))
    parser.add_argument("--only", nargs="*", default=None, help="run only these notebooks")
    args = parser.parse_args(argv)
    results = Path(args.results)
    names = [n for n in NOTEBOOKS if not args.only or n in args.only]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    cache = ROOT / "cache"
    cold = not any(cache.glob("*/*/metrics.json"))  # no stage had run yet: every model is trained here
    total = time.perf_counter()
    timing: dict[str, float] = {}
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ...", flush=True)
        timing[name] = run_notebook(name, args.tier, results)
        print(f"[{i}/{len(names)}] {name} done in {timing[name]:.0f} s", flush=True)
    from sepo.claims import write_claims

    path = write_claims(results)
    seconds = time.perf_counter() - total
    if not args.only:  # the wall time of the whole main command, read by benchmarks/run.py
        record = {"command": "make reproduce", "tier": args.tier, "seconds": seconds, "notebooks": timing,
                  "cache": "cold (empty cache/: world, models and evaluations all built in this run)" if cold
                  else "warm (cached stage runs reused)", "date": datetime.datetime.now().isoformat(timespec="seconds"),
                  "cpus": os.cpu_count()}
        write_json(results / "reproduce_timing.json", record)
    print(f"claims written to {path}; whole run {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
