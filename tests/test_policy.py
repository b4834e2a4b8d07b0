"""Policy stage: references loaded only when needed, selections from saved scores, determinism, clear errors."""

import pytest
from safetensors.torch import load_file

import sepo.policy as policy_module
from conftest import train_tiny_tokenizer
from sepo.errors import ConfigError, DataError, TokenizerMismatchError
from sepo.oracle import OracleConfig, run_oracle
from sepo.policy import PolicyConfig, load_policy_data, run_policy
from training_world import write_model, write_preferences


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("policy_world")
    ref = write_model(root / "ref", tokenizer=tokenizer, seed=0)
    data = write_preferences(root / "data", {"oracle": 16, "train": 12})
    oracle = OracleConfig(reference_path=str(ref), data_path=str(data), output_dir=str(root / "oracle"),
                          learning_rate=5e-3, per_device_batch_size=8, num_train_epochs=1, max_length=64, max_prompt_length=32)
    run_oracle(oracle)
    return {"root": root, "ref": ref, "data": data, "oracle": oracle.run_dir,
            "strong": write_model(root / "strong", tokenizer=tokenizer, seed=5, hidden=32)}


def config(world, name, **overrides):
    values = dict(model_path=str(world["ref"]), data_path=str(world["oracle"]), output_dir=str(world["root"] / name),
                  learning_rate=5e-3, per_device_batch_size=4, max_steps=3, max_length=64, max_prompt_length=32)
    values.update(overrides)
    return PolicyConfig(**values)


def test_sepo_loads_no_reference_and_trains_on_selected_tokens(world, monkeypatch):
    loaded = []
    real = policy_module.load_causal_lm
    monkeypatch.setattr(policy_module, "load_causal_lm", lambda path, field, bf16=False: loaded.append(field) or real(path, field, bf16))
    cfg = config(world, "sepo", selection_kwargs={"k_w": 0.3, "k_l": 0.3})
    metrics = run_policy(cfg)
    assert loaded == ["model_path"] and metrics["reference_loaded"] is False
    assert metrics["train/global_step"] == 3 and metrics["data/train_pairs"] == 12
    assert metrics["data/train/rows_out"] == 12 and metrics["data/train/truncated_response"] == 0  # the oracle's counts
    # about 30% of each response (at least one token each)
    assert 0.2 <= metrics["selection/chosen_fraction"] <= 0.4
    for name in ("config.yaml", "metrics.json", "timing.json", "model/model.safetensors", "model/tokenizer.json"):
        assert (cfg.run_dir / name).exists(), name
    before, after = load_file(str(world["ref"] / "model.safetensors")), load_file(str(cfg.run_dir / "model" / "model.safetensors"))
    assert any((before[k] != after[k]).any() for k in before)


def test_same_seed_gives_byte_identical_metrics(world):
    a, b = config(world, "det-a", loss_kwargs={"gamma": 2.0}), config(world, "det-b", loss_kwargs={"gamma": 2.0})
    run_policy(a)
    run_policy(b)
    assert (a.run_dir / "metrics.json").read_bytes() == (b.run_dir / "metrics.json").read_bytes()
    c = config(world, "det-c", loss_kwargs={"gamma": 2.0}, seed=1)
    run_policy(c)
    assert (a.run_dir / "metrics.json").read_bytes() != (c.run_dir / "metrics.json").read_bytes()


def test_snapshots_save_the_weights_at_fractions_of_the_run_denser_early(world):
    from sepo.trainer import SnapshotCallback, snapshot_steps

    assert SnapshotCallback.steps_for((0.03, 0.06, 0.12, 0.25, 0.38, 0.5, 0.75), 68) == [2, 4, 8, 17, 26, 34, 51]
    assert SnapshotCallback.steps_for((0.01, 0.5, 0.99), 4) == [1, 2]  # at least step 1; the last step is model/
    cfg = config(world, "snap", max_steps=4, snapshot_fractions=(0.25, 0.5))
    run_policy(cfg)
    saved = snapshot_steps(cfg.run_dir)
    assert [step for step, _ in saved] == [1, 2] and all((path / "model.safetensors").is_file() for _, path in saved)
    plain = config(world, "snap-none", max_steps=4)
    run_policy(plain)  # saving snapshots does not change the training
    assert load_file(str(cfg.run_dir / "model" / "model.safetensors"))["lm_head.weight"].equal(
        load_file(str(plain.run_dir / "model" / "model.safetensors"))["lm_head.weight"])
    with pytest.raises(ConfigError, match="snapshot_fractions"):
        config(world, "snap-bad", snapshot_fractions=(1.0,))


@pytest.mark.parametrize("loss", ["dpo", "selective_dpo"])
def test_reference_losses_load_the_reference(world, monkeypatch, loss):
    loaded = []
    real = policy_module.load_causal_lm
    monkeypatch.setattr(policy_module, "load_causal_lm", lambda path, field, bf16=False: loaded.append(path) or real(path, field, bf16))
    # Selective-DPO may use a different, stronger reference than the policy's initial weights
    reference = world["strong"] if loss == "selective_dpo" else world["ref"]
    metrics = run_policy(config(world, loss, loss=loss, reference_path=str(reference), max_steps=2))
    assert loaded == [str(world["ref"]), str(reference)] and metrics["reference_loaded"] is True


def test_reference_free_baselines_run_on_raw_preference_data(world):
    metrics = run_policy(config(world, "simpo", loss="simpo", data_path=str(world["data"]), split="train", max_steps=1))
    assert metrics["data/train/rows_out"] == 12 and metrics["reference_loaded"] is False


def test_config_errors_name_the_parameter(world):
    with pytest.raises(ConfigError, match="reference_path.*needs a reference"):
        config(world, "e", loss="dpo")
    with pytest.raises(ConfigError, match="reference_path.*reference-free and would not use it"):
        config(world, "e", loss="sepo", reference_path="some/model")
    with pytest.raises(ConfigError, match=r"loss_kwargs.*\['beta'\] not taken by loss 'sepo'"):
        config(world, "e", loss_kwargs={"beta": 1.0})
    with pytest.raises(ConfigError, match="loss"):
        config(world, "e", loss="nope")
    with pytest.raises(ConfigError, match=r"selection_kwargs.*k_w = 0.0: must be a fraction"):
        config(world, "e", selection_kwargs={"k_w": 0.0})
    with pytest.raises(ConfigError, match=r"selection_kwargs.*selector 'topk' takes .*not \['mass'\]"):
        config(world, "e", selection_kwargs={"mass": 0.5})
    with pytest.raises(ConfigError, match=r"selector = 'best'.*registered selectors"):
        config(world, "e", selector="best")


def test_bad_inputs_fail_before_training_and_write_nothing(world, tmp_path):
    other = write_model(tmp_path / "other", tokenizer=train_tiny_tokenizer(280), seed=0)
    with pytest.raises(TokenizerMismatchError, match="policy and oracle"):
        run_policy(config(world, "bad1", model_path=str(other)))
    with pytest.raises(DataError, match="needs token scores"):
        run_policy(config(world, "bad2", data_path=str(world["data"]), split="train"))
    with pytest.raises(ConfigError, match="model_path"):
        run_policy(config(world, "bad3", model_path=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="resume_from_checkpoint"):
        run_policy(config(world, "bad4", resume_from_checkpoint=str(tmp_path / "missing")))
    with pytest.raises(TokenizerMismatchError, match="policy and reference"):
        run_policy(config(world, "bad5", loss="dpo", reference_path=str(other)))
    assert not any((world["root"] / f"bad{i}").exists() for i in range(1, 6))


def test_selection_masks_align_with_the_scored_tokens(world, tokenizer):
    data, metrics = load_policy_data(config(world, "x", selection_kwargs={"k_w": 0.5, "k_l": 0.2}), tokenizer)
    scored = policy_module.load_preferences(str(world["oracle"] / "scored"), "")
    for row, scores in zip(data, scored):
        chosen = [s for s, m in zip(scores["chosen_scores"], row["chosen_selected"]) if m]
        rejected = [s for s, m in zip(scores["rejected_scores"], row["rejected_selected"]) if m]
        assert len(chosen) == max(1, int(0.5 * len(row["chosen_ids"]) + 1e-6))
        assert min(chosen) >= max(s for s, m in zip(scores["chosen_scores"], row["chosen_selected"]) if not m)
        assert max(rejected) <= min(s for s, m in zip(scores["rejected_scores"], row["rejected_selected"]) if not m)


def test_policy_metrics_carry_the_drop_and_truncation_counts_of_scored_data(world, tokenizer, tmp_path):
    import json
    import shutil

    def train_counts(metrics):
        return {k.removeprefix("data/train/"): v for k, v in metrics.items() if k.startswith("data/train/")}

    oracle = json.loads((world["oracle"] / "metrics.json").read_text())
    counts = {k.removeprefix("data/target/"): v for k, v in oracle.items() if k.startswith("data/target/")}
    assert set(counts) == {"rows_in", "rows_out", "dropped_long_prompt", "dropped_short_response",
                           "truncated_prompt", "truncated_response"}
    _, metrics = load_policy_data(config(world, "x"), tokenizer)
    assert train_counts(metrics) == counts
    # the counts travel with the scored data (scored/data.json) ...
    scored = tmp_path / "scored"
    shutil.copytree(world["oracle"] / "scored", scored)
    record = json.loads((scored / "data.json").read_text())
    record["report"] = dict(record["report"], truncated_response=5, dropped_long_prompt=2)
    (scored / "data.json").write_text(json.dumps(record))
    _, metrics = load_policy_data(config(world, "x", data_path=str(scored)), tokenizer)
    assert (metrics["data/train/truncated_response"], metrics["data/train/dropped_long_prompt"]) == (5, 2)
    # ... or, for an oracle run without it, come from the run's metrics.json
    run = tmp_path / "older_run"
    shutil.copytree(world["oracle"] / "scored", run / "scored")
    (run / "scored" / "data.json").unlink()
    (run / "metrics.json").write_text(json.dumps({"data/target/rows_in": 13, "data/target/truncated_prompt": 3}))
    _, metrics = load_policy_data(config(world, "x", data_path=str(run)), tokenizer)
    assert train_counts(metrics) == {"rows_in": 13, "truncated_prompt": 3}
    (run / "metrics.json").unlink()
    with pytest.raises(DataError, match="no data.json and no oracle metrics.json"):
        load_policy_data(config(world, "x", data_path=str(run)), tokenizer)


def test_raw_data_errors_name_the_line_of_the_file(world, tokenizer, tmp_path):
    import json

    rows = [{"prompt_id": "a", "prompt": "review of the soup :", "chosen": " good .", "rejected": " bad ."},
            {"prompt_id": "b", "prompt": "review of the pasta :", "chosen": " fine .", "rejected": "  "}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"pairs\.jsonl line 2 \(prompt_id 'b'\): field 'rejected' is an empty response"):
        load_policy_data(config(world, "x", loss="simpo", data_path=str(path), split="train"), tokenizer)
