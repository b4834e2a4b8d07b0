"""Small shared helpers: seeding, progress bars, atomic run directories."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import random
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

T = TypeVar("T")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch, and ask torch for deterministic kernels (CPU runs repeat)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def quiet() -> bool:
    """Progress bars are off under CI (``CI`` set) or when ``SEPO_QUIET`` is set."""
    return bool(os.environ.get("CI")) or bool(os.environ.get("SEPO_QUIET"))


def progress(iterable: Iterable[T], desc: str, total: int | None = None, **kwargs: Any) -> Iterator[T]:
    """A tqdm progress bar that stays silent under CI."""
    return iter(tqdm(iterable, desc=desc, total=total, disable=quiet(), leave=False, **kwargs))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(dumps_json(obj))
    os.replace(tmp, path)


@contextlib.contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that becomes ``final`` only if the block succeeds.

    Whatever the block writes appears at ``final`` all at once; on an exception nothing is left
    behind (and an older ``final`` stays as it was).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def write_run_record(run_dir: str | Path, config: Any, metrics: dict[str, Any]) -> None:
    """Every run writes its config beside its metrics: ``config.yaml`` and ``metrics.json``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml() if hasattr(config, "to_yaml") else str(config))
    write_json(run_dir / "metrics.json", metrics)


# --------------------------------------------------------------------------------------------
# `datasets` transforms without dill hashing
# --------------------------------------------------------------------------------------------
def transform_fingerprint(dataset, operation: str, *arguments: Any) -> str:
    """The fingerprint of ``operation(dataset, *arguments)``: its parent's, the operation and its arguments hashed.

    ``datasets`` fingerprints every transform by hashing its arguments with ``dill``, which for
    ``add_column`` pickles the whole new column object by object (nested lists of token offsets or
    scores: about a second per column, ~12% of a mini-world policy run). Plain ``pickle`` of the same
    lists is ~30x faster and still identifies the content (equal content may at worst get another
    fingerprint, a cache miss, never a stale hit).
    """
    digest = hashlib.sha256(f"{dataset._fingerprint}\0{operation}\0".encode())
    digest.update(pickle.dumps(arguments, protocol=4))
    return digest.hexdigest()[:32]


def add_column(dataset, name: str, values: list):
    """``dataset.add_column(name, values)``, fingerprinted by :func:`transform_fingerprint`."""
    return dataset.add_column(name, values, new_fingerprint=transform_fingerprint(dataset, "add_column", name, values))


def select_rows(dataset, indices):
    """``dataset.select(indices)``, fingerprinted by :func:`transform_fingerprint`."""
    indices = list(indices)
    return dataset.select(indices, new_fingerprint=transform_fingerprint(dataset, "select", indices))
