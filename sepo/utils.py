"""Small shared helpers: seeding, progress bars, atomic run directories."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
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


_HEAP_FROZEN = False


def freeze_import_heap() -> None:
    """Take the objects alive now out of the garbage collector's walks, once per process.

    With torch, transformers and datasets imported a process holds ~400k tracked objects (modules,
    classes, functions), and every full collection walks them all: ~0.25 s each. A training run
    triggers several (accelerate collects after each run, Python whenever enough objects were made):
    about 1 s of a 13 s oracle run. After a first collection (so no garbage is kept), ``gc.freeze``
    moves these long-lived objects to a generation that later collections skip. Collection only frees
    memory, so no number a run computes changes.
    """
    global _HEAP_FROZEN
    if not _HEAP_FROZEN:
        gc.collect()
        gc.freeze()
        _HEAP_FROZEN = True


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


def finite_or_none(value: Any) -> Any:
    """``value`` as plain JSON data: NaN and +-inf become ``None`` (strict JSON has no NaN).

    Containers are walked; numpy scalars and arrays and torch tensors become Python numbers and
    lists, paths become strings. Anything else is left for :func:`json.dumps` to accept or refuse.
    """
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return finite_or_none(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps_json(obj: Any) -> str:
    """Strict JSON (``null`` where a number is NaN or infinite), indented, keys sorted."""
    return json.dumps(finite_or_none(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    """Write strict JSON (:func:`dumps_json`) atomically (temp file + rename), so a reader never sees half a file.

    The text is made before the file is opened, so a value JSON cannot hold leaves no file behind.
    """
    write_text(path, dumps_json(obj))


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


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


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


def column(dataset, name: str) -> list:
    """One column of a ``datasets.Dataset`` as a Python list, read in one slice.

    ``dataset[name]`` is a lazy column whose item access reads the table row by row (~80 us a row);
    code that indexes or loops over a column reads it through this function.
    """
    return dataset[name][:]


def add_column(dataset, name: str, values: list):
    """``dataset.add_column(name, values)``, fingerprinted by :func:`transform_fingerprint`."""
    return dataset.add_column(name, values, new_fingerprint=transform_fingerprint(dataset, "add_column", name, values))


def select_rows(dataset, indices):
    """``dataset.select(indices)``, fingerprinted by :func:`transform_fingerprint`."""
    indices = list(indices)
    return dataset.select(indices, new_fingerprint=transform_fingerprint(dataset, "select", indices))
