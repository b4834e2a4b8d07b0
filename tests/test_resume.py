"""A run stopped mid-training resumes from its last checkpoint and ends exactly like an uninterrupted run."""

import pytest
from safetensors.torch import load_file
from transformers import TrainerCallback

from sepo.errors import ConfigError
from sepo.oracle import OracleConfig, run_oracle
from sepo.policy import PolicyConfig, run_policy
from training_world import write_model, write_preferences


class Crash(RuntimeError):
    pass


class CrashAtStep(TrainerCallback):
    """Simulates a killed job: raises after optimizer step ``step`` (checkpoints before it stay on disk)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Crash(f"stopped at step {self.step}")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("resume_world")
    ref = write_model(root / "ref", tokenizer=tokenizer, seed=0)
    data = write_preferences(root / "data", {"oracle": 16, "train": 16})
    return {"root": root, "ref": ref, "data": data}


def oracle_config(world, name, **overrides):
    return OracleConfig(reference_path=str(world["ref"]), data_path=str(world["data"]), output_dir=str(world["root"] / name),
                        learning_rate=5e-3, per_device_batch_size=4, num_train_epochs=2, save_steps=3,
                        max_length=64, max_prompt_length=32, **overrides)


def policy_config(world, name, **overrides):
    values = dict(model_path=str(world["ref"]), data_path=str(world["root"] / "oracle-full"),
                  output_dir=str(world["root"] / name), learning_rate=5e-3, per_device_batch_size=2,
                  gradient_accumulation_steps=2, num_train_epochs=2, save_steps=3, logging_steps=1,
                  max_length=64, max_prompt_length=32)
    return PolicyConfig(**{**values, **overrides})


def assert_same_run(a, b):
    assert (a.run_dir / "metrics.json").read_bytes() == (b.run_dir / "metrics.json").read_bytes()
    wa, wb = load_file(str(a.run_dir / "model" / "model.safetensors")), load_file(str(b.run_dir / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def test_oracle_resumes_to_the_same_scores_and_metrics(world):
    full = oracle_config(world, "oracle-full")
    run_oracle(full)  # 16 pairs / 4 per step x 2 epochs = 8 steps; checkpoint-3 is mid-epoch
    broken = oracle_config(world, "oracle-resumed")
    with pytest.raises(Crash):
        run_oracle(broken, callbacks=(CrashAtStep(5),))
    assert not (broken.run_dir / "metrics.json").exists()  # a stopped run leaves checkpoints, no result
    assert sorted(p.name for p in (broken.run_dir / "checkpoints").iterdir()) == ["checkpoint-3"]
    run_oracle(oracle_config(world, "oracle-resumed", resume_from_checkpoint="last"))
    assert_same_run(full, broken)
    assert (full.run_dir / "scored" / "data-00000-of-00001.arrow").read_bytes() == \
        (broken.run_dir / "scored" / "data-00000-of-00001.arrow").read_bytes()


def test_policy_resumes_mid_epoch_with_gradient_accumulation(world):
    if not (world["root"] / "oracle-full" / "metrics.json").exists():
        run_oracle(oracle_config(world, "oracle-full"))
    full = policy_config(world, "policy-full")
    run_policy(full)  # 16 pairs / (2 x 2) per step x 2 epochs = 8 steps
    broken = policy_config(world, "policy-resumed")
    with pytest.raises(Crash):
        run_policy(broken, callbacks=(CrashAtStep(5),))
    checkpoint = broken.run_dir / "checkpoints" / "checkpoint-3"  # mid-epoch
    assert checkpoint.is_dir()
    run_policy(policy_config(world, "policy-resumed", resume_from_checkpoint=str(checkpoint)))
    assert_same_run(full, broken)


def test_resume_without_a_checkpoint_is_an_error(world):
    with pytest.raises(ConfigError, match="multiple of logging_steps"):
        policy_config(world, "misaligned", logging_steps=2)
    with pytest.raises(ConfigError, match="no checkpoint"):
        run_policy(policy_config(world, "never-ran", resume_from_checkpoint="last"))
