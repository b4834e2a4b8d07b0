"""Benchmark prompt sets of the paper tier: AlpacaEval, MT-Bench, Arena-Hard (files in ``data/benchmarks``).

Every loader validates what it reads and raises :class:`~sepo.errors.DataError` naming the file, the
line and the field at fault. :func:`load_prompt_set` gives any single-turn set in one shape, the rows
of an AlpacaEval outputs file without the output: ``{"index", "instruction", "dataset"}``. ``index`` is
the row's position in the benchmark's own order (AlpacaEval's length-controlled GLM looks instructions up
by it, so a subset keeps the original indices).

MT-Bench questions have two turns; they are loaded by :func:`load_mt_bench_questions` and judged turn by
turn (:class:`sepo.judges.MTBenchJudge`). Their first turns also form a single-turn prompt set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sepo.errors import DataError

BENCHMARK_DIR = Path(__file__).resolve().parents[1] / "data" / "benchmarks"
FILES = {
    "alpaca_eval": "alpaca_eval_instructions.jsonl",
    "mt_bench": "mt_bench_questions.jsonl",
    "mt_bench_judge_prompts": "mt_bench_judge_prompts.jsonl",
    "mt_bench_reference_answers": "mt_bench_reference_answers_gpt4.jsonl",
    "arena_hard": "arena_hard_v0.1_questions.jsonl",
    "arena_hard_judge": "arena_hard_judge_config.json",
}
PROMPT_SETS = ("alpaca_eval", "mt_bench", "arena_hard")
ALPACA_EVAL_SIZE = 805


def benchmark_path(name: str, root: str | Path | None = None) -> Path:
    """Path of one benchmark file (``root`` defaults to the package's ``data/benchmarks``)."""
    if name not in FILES:
        raise DataError(f"unknown benchmark file {name!r}; known: {sorted(FILES)}")
    path = Path(root or BENCHMARK_DIR) / FILES[name]
    if not path.is_file():
        raise DataError(f"benchmark file not found: {path}")
    return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a malformed line is an error naming its number (1-based)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {number} is not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {number} is a {type(row).__name__}, expected an object")
            rows.append(row)
    return rows


def _require(row: dict, field: str, kind: type | tuple[type, ...], where: str) -> Any:
    if field not in row:
        raise DataError(f"{where}: missing field '{field}'")
    value = row[field]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{where}: field '{field}' must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{where}: field '{field}' is empty")
    return value


def _unique(values: list, what: str, path: Path) -> None:
    seen: set = set()
    for i, v in enumerate(values):
        if v in seen:
            raise DataError(f"{path}: row {i}: duplicate {what} {v!r}")
        seen.add(v)


# --------------------------------------------------------------------------------------------
# AlpacaEval
# --------------------------------------------------------------------------------------------
def load_alpaca_eval(root: str | Path | None = None) -> list[dict[str, Any]]:
    """The 805 AlpacaEval instructions, in AlpacaEval's order: ``{"index", "instruction", "dataset"}``."""
    path = benchmark_path("alpaca_eval", root)
    rows = read_jsonl(path)
    for i, row in enumerate(rows):
        where = f"{path}: row {i}"
        index = _require(row, "index", int, where)
        if index != i:
            raise DataError(f"{where}: field 'index' is {index}; AlpacaEval's order needs index == row position")
        _require(row, "instruction", str, where)
        _require(row, "dataset", str, where)
    if len(rows) != ALPACA_EVAL_SIZE:
        raise DataError(f"{path}: {len(rows)} instructions, AlpacaEval has {ALPACA_EVAL_SIZE}")
    _unique([r["instruction"] for r in rows], "instruction", path)
    return [{"index": r["index"], "instruction": r["instruction"], "dataset": r["dataset"]} for r in rows]


# --------------------------------------------------------------------------------------------
# MT-Bench
# --------------------------------------------------------------------------------------------
def load_mt_bench_questions(root: str | Path | None = None, path: str | Path | None = None) -> list[dict[str, Any]]:
    """The 80 two-turn MT-Bench questions: ``{"question_id", "category", "turns": [str, str]}``.

    ``path`` reads a question file of one's own in FastChat's ``question.jsonl`` layout instead (e.g. a
    subset of the 80) with the same checks.
    """
    if path is not None and not Path(path).is_file():
        raise DataError(f"MT-Bench question file not found: {path}")
    path = Path(path) if path is not None else benchmark_path("mt_bench", root)
    rows = read_jsonl(path)
    if not rows:
        raise DataError(f"{path}: no question")
    for i, row in enumerate(rows):
        where = f"{path}: row {i}"
        _require(row, "question_id", int, where)
        _require(row, "category", str, where)
        turns = _require(row, "turns", list, where)
        if len(turns) != 2 or not all(isinstance(t, str) and t.strip() for t in turns):
            raise DataError(f"{where}: field 'turns' must hold two non-empty strings")
    _unique([r["question_id"] for r in rows], "question_id", path)
    return [{"question_id": r["question_id"], "category": r["category"], "turns": list(r["turns"])} for r in rows]


def load_mt_bench_judge_prompts(root: str | Path | None = None) -> dict[str, dict[str, str]]:
    """The official MT-Bench judge prompts by name (``single-v1``, ``single-math-v1-multi-turn``, ...)."""
    path = benchmark_path("mt_bench_judge_prompts", root)
    prompts = {}
    for i, row in enumerate(read_jsonl(path)):
        where = f"{path}: row {i}"
        for field in ("name", "type", "system_prompt", "prompt_template", "output_format"):
            _require(row, field, str, where)
        prompts[row["name"]] = row
    return prompts


def load_mt_bench_reference_answers(root: str | Path | None = None) -> dict[int, list[str]]:
    """GPT-4 reference answers (both turns) by question id, for the math / reasoning / coding questions."""
    path = benchmark_path("mt_bench_reference_answers", root)
    answers = {}
    for i, row in enumerate(read_jsonl(path)):
        where = f"{path}: row {i}"
        qid = _require(row, "question_id", int, where)
        choices = _require(row, "choices", list, where)
        turns = choices[0].get("turns") if choices and isinstance(choices[0], dict) else None
        if not (isinstance(turns, list) and len(turns) == 2 and all(isinstance(t, str) for t in turns)):
            raise DataError(f"{where}: field 'choices[0].turns' must hold two strings")
        answers[qid] = list(turns)
    return answers


# --------------------------------------------------------------------------------------------
# Arena-Hard
# --------------------------------------------------------------------------------------------
def load_arena_hard(root: str | Path | None = None) -> list[dict[str, Any]]:
    """The 500 Arena-Hard v0.1 questions: ``{"question_id", "cluster", "prompt"}`` (one turn each)."""
    path = benchmark_path("arena_hard", root)
    out = []
    for i, row in enumerate(read_jsonl(path)):
        where = f"{path}: row {i}"
        _require(row, "question_id", str, where)
        _require(row, "cluster", str, where)
        turns = _require(row, "turns", list, where)
        if len(turns) != 1 or not isinstance(turns[0], dict) or not str(turns[0].get("content", "")).strip():
            raise DataError(f"{where}: field 'turns' must hold one turn with a non-empty 'content'")
        out.append({"question_id": row["question_id"], "cluster": row["cluster"], "prompt": turns[0]["content"]})
    _unique([r["question_id"] for r in out], "question_id", path)
    return out


def load_arena_hard_judge_config(root: str | Path | None = None) -> dict[str, Any]:
    """Arena-Hard v0.1 judge settings: system prompt, prompt template, verdict regex, attempts."""
    path = benchmark_path("arena_hard_judge", root)
    config = json.loads(path.read_text(encoding="utf-8"))
    for field in ("system_prompt", "prompt_template", "regex_pattern", "continue_prompt"):
        _require(config, field, str, str(path))
    for field in ("number_of_judgment_attempts", "max_tokens"):
        _require(config, field, int, str(path))
    return config


# --------------------------------------------------------------------------------------------
# One shape for generation
# --------------------------------------------------------------------------------------------
def load_instructions_file(path: str | Path) -> list[dict[str, Any]]:
    """A prompt set of one's own: JSON lines (or a JSON list) of rows with an ``instruction`` field.

    ``dataset`` defaults to the file's stem and ``index`` to the row position.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prompt file not found: {path}")
    if path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of rows")
    else:
        rows = read_jsonl(path)
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i} is a {type(row).__name__}, expected an object")
        instruction = _require(row, "instruction", str, f"{path}: row {i}")
        out.append({"index": row.get("index", i), "instruction": instruction, "dataset": row.get("dataset", path.stem)})
    if not out:
        raise DataError(f"{path}: no prompt")
    _unique([r["index"] for r in out], "index", path)
    return out


def load_prompt_set(name: str, root: str | Path | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """A single-turn prompt set as ``[{"index", "instruction", "dataset"}]``.

    ``name`` is ``alpaca_eval``, ``arena_hard``, ``mt_bench`` (first turns) or a path to a file of one's own
    (see :func:`load_instructions_file`). ``limit`` keeps the first ``limit`` rows (their indices unchanged).
    """
    if name == "alpaca_eval":
        rows = load_alpaca_eval(root)
    elif name == "arena_hard":
        rows = [{"index": i, "instruction": q["prompt"], "dataset": "arena_hard"} for i, q in enumerate(load_arena_hard(root))]
    elif name == "mt_bench":
        rows = [{"index": q["question_id"], "instruction": q["turns"][0], "dataset": f"mt_bench/{q['category']}"}
                for q in load_mt_bench_questions(root)]
    elif Path(name).suffix in (".json", ".jsonl"):
        rows = load_instructions_file(name)
    else:
        raise DataError(f"unknown prompt set {name!r}: use one of {PROMPT_SETS} or a .json/.jsonl file of instructions")
    if limit is not None:
        if limit <= 0:
            raise DataError(f"limit = {limit}: must be positive (or None for the whole set)")
        rows = rows[:limit]
    return rows
