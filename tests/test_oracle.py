"""Oracle stage: DPO on a fraction of the data, saved scores equal beta * log-ratio, clear errors before training."""

import json

import pytest
import torch
from datasets import Dataset, DatasetDict, load_from_disk
from transformers import AutoModelForCausalLM

from sepo.cli import main as cli_main
from sepo.errors import ConfigError, DataError
from sepo.oracle import OracleConfig, oracle_and_target_rows, run_oracle
from sepo.trainer import load_preferences
from training_world import preference_rows, write_model, write_preferences


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("oracle_world")
    return {
        "root": root,
        "ref": write_model(root / "ref", tokenizer=tokenizer, seed=0),
        "data": write_preferences(root / "data", {"oracle": 32, "train": 12, "eval": 16}),
    }


def config(world, name, **overrides):
    values = dict(reference_path=str(world["ref"]), data_path=str(world["data"]), eval_split="eval",
                  output_dir=str(world["root"] / name), learning_rate=5e-3, per_device_batch_size=8,
                  num_train_epochs=2, beta=0.1, max_length=64, max_prompt_length=32)
    values.update(overrides)
    return OracleConfig(**values)


@pytest.fixture(scope="module")
def oracle_run(world):
    cfg = config(world, "oracle")
    return cfg, run_oracle(cfg)


def test_run_directory_and_metrics(oracle_run):
    cfg, metrics = oracle_run
    run = cfg.run_dir
    for name in ("config.yaml", "metrics.json", "timing.json", "model/config.json", "model/tokenizer.json",
                 "scored/scoring.json", "scored/tokenizer/tokenizer.json"):
        assert (run / name).exists(), name
    assert json.loads((run / "metrics.json").read_text()) == pytest.approx(metrics)
    assert OracleConfig.from_yaml(run / "config.yaml") == cfg
    assert metrics["data/oracle_pairs"] == 32 and metrics["data/target_pairs_scored"] == 12
    assert metrics["train/global_step"] == 8  # 32 pairs / 8 per step x 2 epochs
    # praise vs complaint is easy: the DPO-trained oracle must rank held-out pairs well
    assert metrics["eval/rewards/accuracies"] >= 0.8
    assert not any("runtime" in k or "per_second" in k for k in metrics)


def test_saved_scores_are_beta_times_oracle_minus_reference(oracle_run):
    cfg, _ = oracle_run
    scored = load_from_disk(str(cfg.run_dir / "scored"))
    oracle = AutoModelForCausalLM.from_pretrained(str(cfg.run_dir / "model")).eval()
    reference = AutoModelForCausalLM.from_pretrained(cfg.reference_path).eval()
    row = scored[3]
    ids = torch.tensor([row["prompt_ids"] + row["chosen_ids"]])
    with torch.no_grad():
        lo = torch.log_softmax(oracle(input_ids=ids).logits[0], -1)
        lr = torch.log_softmax(reference(input_ids=ids).logits[0], -1)
    start = len(row["prompt_ids"])
    expected = [cfg.beta * (lo[start + i - 1, t] - lr[start + i - 1, t]).item() for i, t in enumerate(row["chosen_ids"])]
    assert row["chosen_scores"] == pytest.approx(expected, abs=1e-5)
    assert sum(row["chosen_scores"]) != 0.0  # the oracle moved away from the reference


def test_same_split_trains_on_a_fraction_and_scores_the_rest():
    train, target = oracle_and_target_rows(10, 10, same_split=True, fraction=0.3, seed=1)
    assert len(train) == 3 and len(target) == 7 and not set(train) & set(target)
    assert sorted(train + target) == list(range(10))
    assert oracle_and_target_rows(10, 10, True, 0.3, 1) == (train, target)  # seeded
    train, target = oracle_and_target_rows(10, 6, same_split=False, fraction=0.5, seed=1)
    assert len(train) == 5 and target == list(range(6))


def test_fraction_of_a_shared_split(world):
    cfg = config(world, "shared", oracle_split="train", target_split="train", oracle_fraction=0.5, eval_split="",
                 num_train_epochs=1)
    metrics = run_oracle(cfg)
    assert metrics["data/oracle_pairs"] == 6 and metrics["data/target_pairs_scored"] == 6


def test_bad_inputs_fail_before_training_and_write_nothing(world, tmp_path):
    with pytest.raises(ConfigError, match="reference_path"):
        run_oracle(config(world, "x1", reference_path=str(tmp_path / "no-model")))
    with pytest.raises(ConfigError, match="no split 'missing'"):
        run_oracle(config(world, "x2", eval_split="missing"))
    bad = tmp_path / "bad"
    wrong = Dataset.from_dict({"prompt": ["a"], "answer": ["b"]})
    DatasetDict({"oracle": wrong, "train": wrong}).save_to_disk(str(bad))
    with pytest.raises(DataError, match=r"bad \[oracle\] \(oracle pairs\): missing column\(s\) \['chosen', 'rejected'\]"):
        run_oracle(config(world, "x3", data_path=str(bad), eval_split=""))
    with pytest.raises(ConfigError, match="no checkpoint"):
        run_oracle(config(world, "x4", resume_from_checkpoint="last"))
    with pytest.raises(ConfigError, match="oracle_fraction"):
        config(world, "x5", oracle_split="train", target_split="train")
    assert not any((world["root"] / f"x{i}").exists() for i in range(1, 6))


def test_data_files_load_through_the_dataset_loader(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = preference_rows(3, seed=0)
    path.write_text("".join(json.dumps(dict(zip(rows, values))) + "\n" for values in zip(*rows.values())))
    data = load_preferences(str(path), "train")
    assert data["chosen"] == rows["chosen"]
    assert load_preferences(str(path), "")["prompt"] == rows["prompt"]
    with pytest.raises(ConfigError, match="no split 'oracle'"):
        load_preferences(str(path), "oracle")
    with pytest.raises(ConfigError, match="not a hub id"):
        load_preferences(str(tmp_path / "nothing.jsonl"), "train")


def test_cli_runs_the_stage_with_overrides(world, tmp_path, capsys):
    path = tmp_path / "oracle.yaml"
    config(world, "from-yaml").to_yaml(path)
    out = tmp_path / "cli-run"
    code = cli_main(["oracle", "--config", str(path), "--set", f"output_dir={out}", "--set", "max_steps=1",
                     "--set", "eval_split="])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["train/global_step"] == 1
    assert OracleConfig.from_yaml(out / "config.yaml").max_steps == 1
    assert cli_main(["oracle", "--config", str(path), "--set", "beta=-1"]) == 2


def _write_jsonl(path, rows, blank_after=()):
    """One row per line (a blank line after the rows listed in ``blank_after``); returns each row's line."""
    lines, text = [], ""
    for i, row in enumerate(rows):
        text += json.dumps(row) + "\n"
        lines.append(text.count("\n"))
        if i in blank_after:
            text += "\n"
    path.write_text(text)
    return lines


def _jsonl_rows(n, seed=0):
    plain = preference_rows(n, seed)
    return [{"prompt_id": f"p{i}", **dict(zip(plain, values))} for i, values in enumerate(zip(*plain.values()))]


def test_errors_after_the_seeded_split_name_the_line_of_the_file(world, tmp_path):
    rows = _jsonl_rows(10)
    bad = 7
    rows[bad]["chosen"] = "   "
    path = tmp_path / "pairs.jsonl"
    lines = _write_jsonl(path, rows, blank_after=(2,))  # a blank line: row 7 sits on line 9
    assert lines[bad] == 9
    cfg = config(world, "split-error", data_path=str(path), oracle_split="train", target_split="train",
                 oracle_fraction=0.5, eval_split="", seed=3)
    train, target = oracle_and_target_rows(10, 10, True, 0.5, cfg.seed)
    subset = train if bad in train else target
    assert subset.index(bad) != bad  # inside its split the row has another index
    with pytest.raises(DataError, match=r"pairs\.jsonl line 9 \(prompt_id 'p7'\): field 'chosen' is an empty response"):
        run_oracle(cfg)
    assert not cfg.run_dir.exists()


def test_scored_pairs_keep_their_line_in_the_file(world, tmp_path):
    rows = _jsonl_rows(10)
    path = tmp_path / "pairs.jsonl"
    lines = _write_jsonl(path, rows, blank_after=(0,))
    cfg = config(world, "jsonl", data_path=str(path), oracle_split="train", target_split="train",
                 oracle_fraction=0.5, eval_split="", num_train_epochs=1, max_length=12, max_prompt_length=6)
    metrics = run_oracle(cfg)
    _, target = oracle_and_target_rows(10, 10, True, 0.5, cfg.seed)
    scored = load_from_disk(str(cfg.run_dir / "scored"))
    assert scored["row"] == target
    assert scored["line"] == [lines[i] for i in target]
    assert scored["prompt_id"] == [f"p{i}" for i in target]
    # the record a policy reads: where the pairs came from and what tokenising them cut
    record = json.loads((cfg.run_dir / "scored" / "data.json").read_text())
    assert record["source"] == str(path)
    assert record["report"] == {k.removeprefix("data/target/"): v for k, v in metrics.items() if k.startswith("data/target/")}
    assert record["report"]["rows_in"] == 5 and record["report"]["truncated_response"] > 0


def test_a_malformed_json_line_is_named(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(_jsonl_rows(1)[0]) + "\n" + '{"prompt": "x", "chosen":\n')
    with pytest.raises(DataError, match=r"pairs\.jsonl line 2: not valid JSON"):
        load_preferences(str(path), "train")
    path.write_text(json.dumps(_jsonl_rows(1)[0]) + "\n[1, 2]\n")
    with pytest.raises(DataError, match=r"pairs\.jsonl line 2: a JSON list, expected an object"):
        load_preferences(str(path), "train")


def test_rows_of_a_json_array_or_a_saved_split_are_named_by_index(world, tmp_path, tokenizer):
    from sepo.paper import prepare_preferences

    rows = _jsonl_rows(3)
    rows[1]["rejected"] = ""
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(rows, indent=1))  # one JSON document: rows have no line of their own
    data = load_preferences(str(path), "train")
    assert "line" not in data.column_names and data["row"] == [0, 1, 2]
    with pytest.raises(DataError, match=r"pairs\.json row 1 \(prompt_id 'p1'\): field 'rejected' is an empty response"):
        prepare_preferences(data, tokenizer, max_length=64, max_prompt_length=32, source=str(path))
    split = load_preferences(str(world["data"]), "train").select([5, 2])
    assert split["row"] == [5, 2]  # the index in the split survives a selection
