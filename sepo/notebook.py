"""What a notebook calls to read its parameters and to write its results.

**Parameters.** A notebook's parameters cell names a shared experiment file (``experiment``: an
:class:`~sepo.pipeline.ExperimentConfig` YAML, ``configs/mini/smoke.yaml`` by default, or
``configs/mini/base.yaml`` in the reproduction) and its own sweep. Any shared parameter can be
overridden with papermill (``-p eval_prompts 32``, ``-y "seeds: [0, 1]"``, or ``-f file.yaml``):
:func:`config_from` reads the file, applies the overrides it finds among the notebook's variables,
checks every value's type, and records the notebook's own parameters in ``config.notebook``.

**Results.** :func:`write_results` writes ``config.yaml``, ``metrics.json`` (strict JSON: ``null``
for a missing number) and markdown tables into ``results/<notebook>/``, with every path relative to
the project.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from sepo.errors import ConfigError
from sepo.pipeline import ROOT, ExperimentConfig, resolve
from sepo.utils import write_json, write_text

HOW_TO_PASS_LISTS = ("papermill's -p passes text; pass a list or a mapping as YAML with -y "
                     "(e.g. -y \"seeds: [0, 1]\") or in a parameters file with -f FILE.yaml")


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple):
        item = [a for a in args if a is not Ellipsis]
        return f"a list of {_type_name(item[0])}" if item else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


def check_type(name: str, value: Any, hint: Any) -> Any:
    """``value`` if it has the type ``hint`` (int, float, str, bool, list[T], tuple[T, ...], dict), else a
    :class:`ConfigError` that names the parameter, the type it needs and how to pass lists with papermill.
    Integers are accepted where numbers are needed; lists are returned as given."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    ok: bool
    if origin in (list, tuple):
        item = next((a for a in args if a is not Ellipsis), None)
        ok = isinstance(value, (list, tuple)) and (item is None or all(_is(v, item) for v in value))
    elif origin is dict or hint is dict:
        ok = isinstance(value, dict)
    else:
        ok = _is(value, hint)
    if not ok:
        hint_text = f"; {HOW_TO_PASS_LISTS}" if origin in (list, tuple, dict) or hint is dict else ""
        raise ConfigError(f"notebook parameter {name} = {value!r} ({type(value).__name__}): needs {_type_name(hint)}{hint_text}")
    return value


def _is(value: Any, hint: Any) -> bool:
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is Any:
        return True
    return isinstance(value, hint)


def config_from(namespace: dict, notebook: dict[str, Any] | None = None, cls: type = ExperimentConfig) -> ExperimentConfig:
    """The experiment config of a notebook, from the variables of its parameters cell.

    ``namespace["experiment"]`` names the shared parameters' YAML (relative to the project); every field
    of ``cls`` also defined in ``namespace`` overrides it. ``notebook`` maps the notebook's own parameters
    to their types (e.g. ``{"ks": list[float]}``); their values are kept in ``config.notebook`` so that
    the ``config.yaml`` written beside the metrics holds every parameter of the run.
    """
    notebook = notebook or {}
    experiment = namespace.get("experiment", "configs/mini/smoke.yaml")
    check_type("experiment", experiment, str)
    path = resolve(experiment)
    if not path.is_file():
        raise ConfigError(f"notebook parameter experiment = {experiment!r}: no such file (e.g. configs/mini/base.yaml)")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{experiment}: expected a mapping of parameters, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.name != "notebook"]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{experiment}: unknown parameter(s) {unknown}; known: {sorted(fields)}")
    values.update({name: namespace[name] for name in fields if name in namespace})
    for name, value in values.items():
        check_type(name, value, hints[name])
    missing = [name for name in notebook if name not in namespace]
    if missing:
        raise ConfigError(f"notebook parameter(s) {missing} are not defined in the parameters cell")
    own = {"experiment": experiment, **{name: check_type(name, namespace[name], hint) for name, hint in notebook.items()}}
    return cls.from_dict(values, notebook=own)


def portable(config: ExperimentConfig) -> dict[str, Any]:
    """The config as recorded in results: paths inside the project written relative to it."""
    out = config.to_dict()
    for name in ("cache_dir", "results_dir", "world"):
        path = Path(out[name])
        if path.is_absolute() and path.resolve().is_relative_to(ROOT):
            out[name] = path.resolve().relative_to(ROOT).as_posix()
    return out


def write_results(results_dir: str | Path, config: ExperimentConfig, metrics: dict, tables: dict[str, Any] | None = None) -> Path:
    """Write a notebook's ``config.yaml``, ``metrics.json`` and markdown tables into ``results_dir``."""
    out = resolve(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", yaml.safe_dump(portable(config), sort_keys=False))
    write_json(out / "metrics.json", metrics)  # strict JSON: NaN and inf written as null
    for name, frame in (tables or {}).items():
        write_text(out / f"{name}.md", markdown(frame) + "\n")
    return out


def markdown(frame) -> str:
    """A frame as a markdown table: three decimals, or scientific notation for a column of small numbers
    (learning rates), which three decimals would show as 0.000."""
    if not hasattr(frame, "to_markdown"):
        return str(frame)
    formats = []
    for column in frame.columns:
        values = frame[column]
        small = values.dtype.kind == "f" and values.notna().any() and (values.dropna().abs().between(1e-12, 1e-2, inclusive="both")).all()
        formats.append(".1e" if small else ".3f")
    return frame.to_markdown(index=False, floatfmt=tuple(formats))
