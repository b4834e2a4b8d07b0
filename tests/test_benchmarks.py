"""Benchmark prompt sets: sizes, fields, AlpacaEval's order, and clear errors on malformed files."""

import json
import shutil

import pytest

from sepo.benchmarks import (
    BENCHMARK_DIR,
    FILES,
    load_alpaca_eval,
    load_arena_hard,
    load_arena_hard_judge_config,
    load_mt_bench_judge_prompts,
    load_mt_bench_questions,
    load_mt_bench_reference_answers,
    load_prompt_set,
    read_jsonl,
)
from sepo.errors import DataError


def test_alpaca_eval_has_805_instructions_in_their_original_order():
    rows = load_alpaca_eval()
    assert len(rows) == 805 and [r["index"] for r in rows] == list(range(805))
    assert rows[0]["instruction"].startswith("What are the names of some famous actors")
    assert {r["dataset"] for r in rows} == {"helpful_base", "koala", "oasst", "selfinstruct", "vicuna"}


def test_mt_bench_questions_prompts_and_references():
    questions = load_mt_bench_questions()
    assert len(questions) == 80 and all(len(q["turns"]) == 2 for q in questions)
    assert [q["question_id"] for q in questions] == list(range(81, 161))
    prompts = load_mt_bench_judge_prompts()
    assert {"single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn"} <= set(prompts)
    assert "[[rating]]" in prompts["single-v1"]["prompt_template"]
    references = load_mt_bench_reference_answers()
    needing = [q["question_id"] for q in questions if q["category"] in ("math", "reasoning", "coding")]
    assert sorted(references) == sorted(needing) and len(references) == 30


def test_arena_hard_questions_and_judge_config():
    questions = load_arena_hard()
    assert len(questions) == 500 and len({q["question_id"] for q in questions}) == 500
    config = load_arena_hard_judge_config()
    assert config["system_prompt"].startswith("Please act as an impartial judge")
    assert "[[B>>A]]" in config["system_prompt"] and config["number_of_judgment_attempts"] == 2
    for field in ("{question_1}", "{answer_1}", "{answer_2}"):
        assert field in config["prompt_template"]


@pytest.mark.parametrize("name,size,first_dataset", [("alpaca_eval", 805, "helpful_base"), ("arena_hard", 500, "arena_hard"),
                                                     ("mt_bench", 80, "mt_bench/writing")])
def test_prompt_sets_share_one_shape(name, size, first_dataset):
    rows = load_prompt_set(name)
    assert len(rows) == size and set(rows[0]) == {"index", "instruction", "dataset"}
    assert rows[0]["dataset"] == first_dataset
    head = load_prompt_set(name, limit=3)
    assert head == rows[:3]


def test_own_prompt_file_defaults_and_errors(tmp_path):
    path = tmp_path / "world_eval.jsonl"
    path.write_text('{"instruction": "review of the soup :"}\n{"instruction": "review of the pizza :", "index": 7}\n')
    rows = load_prompt_set(str(path))
    assert rows == [{"index": 0, "instruction": "review of the soup :", "dataset": "world_eval"},
                    {"index": 7, "instruction": "review of the pizza :", "dataset": "world_eval"}]
    path.write_text('{"instruction": "a"}\n{"prompt": "b"}\n')
    with pytest.raises(DataError, match=r"row 1: missing field 'instruction'"):
        load_prompt_set(str(path))
    path.write_text('{"instruction": "a"}\n{not json\n')
    with pytest.raises(DataError, match=r"line 2 is not valid JSON"):
        read_jsonl(path)
    with pytest.raises(DataError, match="unknown prompt set"):
        load_prompt_set("alpacaeval")
    with pytest.raises(DataError, match="limit"):
        load_prompt_set("mt_bench", limit=0)


def test_alpaca_eval_out_of_order_is_an_error(tmp_path):
    for name in FILES.values():
        shutil.copy(BENCHMARK_DIR / name, tmp_path / name)
    rows = read_jsonl(tmp_path / FILES["alpaca_eval"])
    rows[3], rows[4] = rows[4], rows[3]
    (tmp_path / FILES["alpaca_eval"]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"row 3: field 'index' is 4"):
        load_alpaca_eval(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_arena_hard(tmp_path / "missing")
