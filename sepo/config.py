"""Config dataclasses: one per stage, each also the papermill parameter set of its notebook.

Every stage config subclasses :class:`StageConfig`. Fields carry their help text in
``field(metadata={"help": ...})``; ``__post_init__`` validates them, so a bad value fails before
any work starts, with a message naming the field. Configs round-trip through YAML and have a
stable fingerprint (used as the cache key of every artefact a stage writes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

from sepo.errors import ConfigError

T = TypeVar("T", bound="StageConfig")


def help_field(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """``dataclasses.field`` with a help text, mutable defaults given as a factory."""
    if isinstance(default, (list, dict, tuple)) and not isinstance(default, str):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


@dataclasses.dataclass
class StageConfig:
    """Base of every stage config: validation hook, YAML round trip, fingerprint."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field when a value is out of range."""

    # --- helpers for subclasses' validate() -------------------------------------------------
    def _require(self, condition: bool, name: str, why: str) -> None:
        if not condition:
            raise ConfigError(f"{type(self).__name__}.{name} = {getattr(self, name)!r}: {why}")

    # --- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any] | None = None, **overrides: Any) -> T:
        """Build from a mapping; unknown keys are an error that names them."""
        merged = {**(values or {}), **overrides}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown parameter(s) {unknown}; known: {sorted(names)}")
        hints = get_type_hints(cls)
        kwargs = {}
        for key, value in merged.items():
            # YAML gives lists where a dataclass declares tuples
            if isinstance(value, list) and "tuple" in str(hints.get(key, "")):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls: type[T], path: str | Path, **overrides: Any) -> T:
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of parameters, got {type(values).__name__}")
        return cls.from_dict(values, **overrides)

    def fingerprint(self, exclude: tuple[str, ...] = ()) -> str:
        """Short stable hash of the config's values (fields in ``exclude`` left out)."""
        values = {k: v for k, v in self.to_dict().items() if k not in exclude}
        blob = json.dumps(values, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
