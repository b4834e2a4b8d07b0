"""Cache keys made of a run's config **and** the source code that computes it.

Every cached artefact lives in ``<cache>/<stage>/<key>/``. The key hashes two things:

* the **config fingerprint**: every field of the stage's validated config (``StageConfig.fingerprint``);
* the **code fingerprint**: the source of every ``sepo`` module the stage's module imports, directly or
  through other ``sepo`` modules (read from their import statements, including imports inside
  functions), so that a run is never read back after the code that made it changed.

Registries are hashed per entry: in a module that registers functions (``@register`` in
:mod:`sepo.losses`, ``@register_selector`` in :mod:`sepo.selectors`) the registered functions are
left out of the module's hash and only the entries a run uses are added. Editing ``sepo_loss``
therefore retrains exactly the policies trained with the ``sepo`` loss; editing a helper the losses
share (``masked_mean``) retrains every run that imports the module; editing code no stage imports
(plots, tables, claims, notebooks) retrains nothing.

:func:`cached_run` runs a stage into its key's directory unless a finished run is already there, and
appends one line per call to ``<cache>/usage.jsonl`` ("built" or "reused"), from which the
reproduction tells a cold run from a warm one.

Several processes may share one cache (the reproduction runs notebooks side by side): a run is built
under an exclusive lock on its key (:func:`exclusive`), so two processes never build the same run,
and :func:`share_work` lets processes that walk the same list of runs split it instead of waiting
on each other.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import dataclasses
import fcntl
import functools
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent

# modules that decide where artefacts live but compute none of them: left out of every closure
NOT_COMPUTING = {"sepo.cache"}

# module -> name of the decorator that registers its entries
REGISTRIES = {"sepo.losses": "register", "sepo.selectors": "register_selector"}

# what each cached stage runs: its module, and extra modules it calls through objects passed in
STAGE_MODULES = {
    "world": ("sepo.world.build",),
    "oracle": ("sepo.oracle",),
    "policy": ("sepo.policy",),
    "evaluate": ("sepo.evaluate", "sepo.world.judge"),
    "reference_outputs": ("sepo.evaluate",),
    "frontier": ("sepo.evaluate", "sepo.world.judge"),
    "carried": ("sepo.transfer", "sepo.data"),
    "diagnostics": ("sepo.diagnostics",),
    "response_logps": ("sepo.scoring", "sepo.trainer"),  # a reference's log-probs, computed once (sepo.scoring)
}


def _module_path(module: str, root: Path) -> Path | None:
    parts = module.split(".")
    if parts[0] != "sepo":
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=None)
def _parsed(stamp: tuple[str, int, int]) -> tuple[str, ast.Module]:
    """A file's source and syntax tree, read again whenever the file changes (``stamp``: path, mtime, size)."""
    source = Path(stamp[0]).read_text()
    return source, ast.parse(source)


def _imports(module: str, root: Path) -> set[str]:
    """``sepo`` modules imported anywhere in ``module``'s source (top level or inside functions)."""
    path = _module_path(module, root)
    if path is None:
        return set()
    return {m for m in _imported_names(module, _stamp(path)) if m.startswith("sepo") and _module_path(m, root) is not None}


@functools.lru_cache(maxsize=None)
def _imported_names(module: str, stamp: tuple[str, int, int]) -> frozenset[str]:
    """Every module name ``module``'s source imports, read again whenever the file changes (``stamp``)."""
    path = Path(stamp[0])
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(_parsed(stamp)[1]):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # "from sepo import stats"
    return frozenset(found)


def module_closure(modules: Iterable[str], root: Path = PACKAGE) -> list[str]:
    """``modules`` and every ``sepo`` module they import, transitively; sorted."""
    seen: set[str] = set()
    todo = [m for m in modules]
    while todo:
        module = todo.pop()
        if module in seen or module in NOT_COMPUTING or _module_path(module, root) is None:
            continue
        seen.add(module)
        todo.extend(_imports(module, root) - seen)
        parent = module.rpartition(".")[0]
        if parent and parent not in seen:  # importing a submodule runs its package's __init__
            todo.append(parent)
    return sorted(seen)


def _registered_functions(tree: ast.Module, decorator: str) -> dict[str, ast.FunctionDef]:
    """Registry name -> function node, for functions decorated with ``@decorator("name", ...)``."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Name) and deco.func.id == decorator
                        and deco.args and isinstance(deco.args[0], ast.Constant)):
                    out[deco.args[0].value] = node
    return out


def _segments(module: str, root: Path) -> tuple[str, dict[str, str]]:
    """A module's source without its registered functions, and each registered function's source."""
    source, tree = _parsed(_stamp(_module_path(module, root)))
    decorator = REGISTRIES.get(module)
    if decorator is None:
        return source, {}
    lines = source.splitlines(keepends=True)
    entries, cut = {}, []
    for name, node in _registered_functions(tree, decorator).items():
        start = min(d.lineno for d in node.decorator_list) - 1
        entries[name] = "".join(lines[start: node.end_lineno])
        cut.append((start, node.end_lineno))
    shared = [line for i, line in enumerate(lines) if not any(a <= i < b for a, b in cut)]
    return "".join(shared), entries


def _code_fingerprint(modules: tuple[str, ...], entries: tuple[tuple[str, str], ...], root: Path) -> str:
    digest = hashlib.sha256()
    for module in module_closure(modules, root):
        shared, _ = _segments(module, root)
        digest.update(f"module {module}\n{shared}\n".encode())
    for module, name in entries:
        _, registered = _segments(module, root)
        if name not in registered:
            raise KeyError(f"{module} registers no {name!r}")
        digest.update(f"entry {module}:{name}\n{registered[name]}\n".encode())
    return digest.hexdigest()[:16]


def _package_stamp(root: Path) -> tuple[tuple[str, int, int], ...]:
    """The :func:`_stamp` of every source file under ``root``: it changes whenever any of them does."""
    return tuple(_stamp(path) for path in sorted(root.rglob("*.py")))


@functools.lru_cache(maxsize=None)
def _stamped_code_fingerprint(modules: tuple[str, ...], entries: tuple[tuple[str, str], ...], root: Path,
                              package_stamp: tuple) -> str:
    """:func:`_code_fingerprint`, computed once per state of the package's files (``package_stamp``)."""
    return _code_fingerprint(modules, entries, root)


# MKL's conditional-numerical-reproducibility branches (mkl_cbwr.h): the code path its BLAS takes
_MKL_BRANCHES = {0: "off", 1: "off", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2",
                 9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}


@functools.lru_cache(maxsize=None)
def mkl_branch() -> str:
    """The code path of the BLAS that torch's CPU matrix products run on (MKL): ``off`` when MKL picks it per
    CPU at run time, else the branch fixed by ``MKL_CBWR`` (``AUTO`` where MKL cannot honour the one asked for,
    e.g. on a CPU of another vendor); ``none`` without MKL."""
    import ctypes

    import torch

    if not torch.backends.mkl.is_available():
        return "none"
    torch.ones(2, 2) @ torch.ones(2, 2)  # MKL reads MKL_CBWR when it first runs
    try:
        library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        code = library.mkl_serv_cbwr_get(1)  # MKL_CBWR_BRANCH
    except (OSError, AttributeError):
        return "unknown"
    return _MKL_BRANCHES.get(code, str(code))


def numerics() -> str:
    """What decides float rounding besides the code: the torch version, the number of threads an operation is
    split over, the code path of MKL's matrix products (:func:`mkl_branch`) and the CPU kernel set of torch's
    other operations (``ATEN_CPU_CAPABILITY`` picks one; another rounds like another CPU would). The
    reproduction fixes both (:data:`sepo.reproduce.PINNED_KERNELS`). The kernel set comes last
    (:func:`sepo.claims.kernels_label`)."""
    import torch

    return (f"torch {torch.__version__}; threads {torch.get_num_threads()}; mkl branch {mkl_branch()}; "
            f"cpu kernels {torch.backends.cpu.get_cpu_capability()}")


def code_fingerprint(stage: str, *, losses: Iterable[str] = (), selectors: Iterable[str] = (),
                     root: str | Path = PACKAGE) -> str:
    """Hash of the source that computes a ``stage``'s artefact (see the module docstring), and of
    :func:`numerics`: a run made under another kernel set is another run.

    ``losses`` / ``selectors`` name the registry entries the run uses.
    """
    entries = tuple(sorted({("sepo.losses", name) for name in losses} | {("sepo.selectors", name) for name in selectors}))
    root = Path(root).resolve()
    code = _stamped_code_fingerprint(STAGE_MODULES[stage], entries, root, _package_stamp(root))
    return hashlib.sha256(f"{code}:{numerics()}".encode()).hexdigest()[:16]


def stage_code(stage: str, config: Any) -> str:
    """The code fingerprint of one stage run, with the registry entries its config uses."""
    if stage == "policy":
        from sepo.losses import get_loss

        spec = get_loss(config.loss)
        return code_fingerprint("policy", losses=[config.loss], selectors=[config.selector] if spec.needs_selection else [])
    if stage == "oracle":
        return code_fingerprint("oracle", losses=["dpo"])
    return code_fingerprint(stage)


def cache_key(config_fingerprint: str, code: str) -> str:
    return hashlib.sha256(f"{config_fingerprint}:{code}".encode()).hexdigest()[:16]


def log_usage(cache_dir: str | Path, stage: str, key: str, built: bool) -> None:
    """Append one line to ``<cache>/usage.jsonl``: which run a stage call built or reused."""
    path = Path(cache_dir) / "usage.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({"stage": stage, "key": key, "built": built, "time": time.time()}) + "\n")


def cached_run(stage: str, cls: type, values: dict[str, Any], run: Callable[[Any], dict], cache_dir: str | Path,
               out_field: str = "output_dir", code: str | None = None) -> tuple[Path, dict]:
    """Run ``run(cls(**values))`` into ``cache_dir/stage/<key>`` unless that run already finished.

    The key hashes the validated config (every field but ``out_field``, which is set to the run
    directory) and the code fingerprint ``code`` (default: the stage's, :func:`stage_code`). Returns
    the run directory and the run's metrics.
    """
    provisional = cls.from_dict(values, **{out_field: str(Path(cache_dir) / stage)})  # validated before any work
    code = stage_code(stage, provisional) if code is None else code
    key = cache_key(provisional.fingerprint(exclude=(out_field,)), code)
    run_dir = Path(cache_dir) / stage / key
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.exists():
        with exclusive(lock_path(cache_dir, stage, key)):
            if not metrics_file.exists():  # another process may have built it while this one waited
                from sepo.utils import freeze_import_heap

                freeze_import_heap()  # full collections during the run then skip the imports' objects
                metrics = run(dataclasses.replace(provisional, **{out_field: str(run_dir)}))
                log_usage(cache_dir, stage, key, built=True)
                return run_dir, metrics
    log_usage(cache_dir, stage, key, built=False)
    return run_dir, json.loads(metrics_file.read_text())


# --------------------------------------------------------------------------------------------
# Several processes, one cache
# --------------------------------------------------------------------------------------------
class RunBusy(Exception):
    """Another process is building what this one needs (raised only inside :func:`share_work`'s first pass)."""


_PUT_OFF_BUSY = contextvars.ContextVar("sepo_put_off_busy", default=False)


def lock_path(cache_dir: str | Path, stage: str, key: str) -> Path:
    """The lock file of one run: ``<cache>/<stage>/.locks/<key>.lock``, beside (not inside) run directories."""
    return Path(cache_dir) / stage / ".locks" / f"{key}.lock"


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (made if missing) for the block: one process at a time
    builds what it guards. A process that finds the lock taken waits for it, or raises :class:`RunBusy`
    inside :func:`share_work`'s first pass. The operating system frees the lock of a process that dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if _PUT_OFF_BUSY.get():
                raise RunBusy(str(path)) from None
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def share_work(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """``[call() for call in calls]``, in a way that lets processes walking the same list split it.

    First pass: each call runs, but one that needs a run another process is building is put off
    (:class:`RunBusy`) instead of waiting. Second pass: the calls put off run again, waiting for those
    runs and reading them from the cache. Every stage run is a pure function of its config, so the
    results, returned in the order of ``calls``, are those of the plain loop. Inside another
    ``share_work``'s first pass, a call put off here puts off the outer call too.
    """
    results: list[Any] = [None] * len(calls)
    put_off = []
    token = _PUT_OFF_BUSY.set(True)
    try:
        for i, call in enumerate(calls):
            try:
                results[i] = call()
            except RunBusy:
                put_off.append(i)
    finally:
        _PUT_OFF_BUSY.reset(token)
    for i in put_off:
        results[i] = calls[i]()
    return results


def usage_since(cache_dir: str | Path, offset: int) -> dict[str, int]:
    """What the stage calls logged in ``usage.jsonl`` after its first ``offset`` lines: ``built`` (runs
    made), ``reused_own`` (reads of a run made after ``offset``) and ``reused_older`` (reads of a run
    that existed before: the run was not cold)."""
    path = Path(cache_dir) / "usage.jsonl"
    lines = path.read_text().splitlines()[offset:] if path.exists() else []
    records = [json.loads(line) for line in lines if line.strip()]
    built = {(r["stage"], r["key"]) for r in records if r["built"]}
    reads = [(r["stage"], r["key"]) for r in records if not r["built"]]
    return {"built": len(built), "reused_own": sum(k in built for k in reads), "reused_older": sum(k not in built for k in reads)}


def usage_lines(cache_dir: str | Path) -> int:
    path = Path(cache_dir) / "usage.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0
