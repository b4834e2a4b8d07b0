"""Command line: ``python -m sepo <stage> --config file.yaml [--set key=value ...]``.

Each stage is one function ``run_<stage>(config) -> metrics`` that the CLI, the notebooks and the
tests all call; the CLI only builds the config. ``--set`` values are parsed as YAML
(``--set k_w=0.5``, ``--set loss_kwargs={gamma: 2.0}``). Multi-GPU runs go through accelerate::

    accelerate launch --config_file configs/accelerate/ddp.yaml -m sepo policy --config configs/paper/policy_sepo_pythia-2.8b.yaml
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import yaml

from sepo.errors import ConfigError, SepoError
from sepo.utils import dumps_json

# stage -> (module, config class, run function)
STAGES = {
    "sft": ("sepo.sft", "SFTConfig", "run_sft"),
    "oracle": ("sepo.oracle", "OracleConfig", "run_oracle"),
    "policy": ("sepo.policy", "PolicyConfig", "run_policy"),
    "evaluate": ("sepo.evaluate", "EvalConfig", "run_evaluate"),
}


def parse_overrides(pairs: Sequence[str]) -> dict:
    """``["k=v", ...]`` -> ``{k: yaml(v)}``; a pair without ``=`` is an error naming it."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(value) if value != "" else ""
    return out


def stage_functions(stage: str):
    """(config class, run function) of a stage."""
    module_name, config_name, run_name = STAGES[stage]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ConfigError(f"stage {stage!r}: module {module_name} is not available ({err})") from err
    return getattr(module, config_name), getattr(module, run_name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sepo", description="Run one stage of the SePO pipeline.")
    parser.add_argument("stage", choices=sorted(STAGES), help="which stage to run")
    parser.add_argument("--config", required=True, help="YAML file of the stage's parameters")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one parameter (YAML value); repeatable")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config_class, run = stage_functions(args.stage)
        config = config_class.from_yaml(args.config, **parse_overrides(args.overrides))
        metrics = run(config)
    except SepoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(dumps_json(metrics), end="")
    return 0
