"""Data-parallel training on CPU: two processes through `accelerate launch` (gloo) equal one process with
gradient accumulation, and a batch of 8 equals 8 accumulated batches of 1.

Tolerances (stated, not tuned to pass): per-step losses within 1e-5 relative, final weights within 1e-5
absolute, where training moves the weights by more than 1e-3. Measured here: the two-process run equals
the accumulated one bit for bit (gloo averages two gradients, (a + b) / 2 == a / 2 + b / 2 in floating
point); batch 8 against 8 x 1 differs by < 1e-6 (padding changes the shapes of the matrix products).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from sepo.policy import PolicyConfig, run_policy
from training_world import write_model, write_preferences

REPO = Path(__file__).resolve().parents[1]
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-5


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("multiprocess")
    model = write_model(root / "sft", tokenizer=tokenizer, seed=0)
    data = write_preferences(root / "data", {"train": 8})
    # DPO: the policy and a frozen reference on every process; one epoch of 8 pairs, a checkpoint at the end
    # keeps the whole log history (one loss per optimizer step)
    values = dict(model_path=str(model), reference_path=str(model), loss="dpo", data_path=str(data), split="train",
                  learning_rate=1e-3, num_train_epochs=1, logging_steps=1, max_length=64, max_prompt_length=32, seed=0)
    return root, values


def trajectory(run_dir: Path) -> tuple[list[float], dict]:
    """Per-step losses (from the last checkpoint's log history) and the final weights of a run."""
    last = max((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    history = json.loads((last / "trainer_state.json").read_text())["log_history"]
    return [e["loss"] for e in history if "loss" in e], load_file(str(run_dir / "model" / "model.safetensors"))


def assert_same_training(a, b, initial: dict) -> None:
    (losses_a, weights_a), (losses_b, weights_b) = a, b
    assert len(losses_a) == len(losses_b) and losses_a == pytest.approx(losses_b, rel=LOSS_RTOL)
    moved = max((weights_a[k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-3  # training did move the weights: the comparison below can fail
    assert max((weights_a[k] - weights_b[k]).abs().max().item() for k in initial) <= WEIGHT_ATOL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_through_accelerate_launch_match_one_process_with_accumulation(setup):
    root, values = setup
    one = PolicyConfig(**values, output_dir=str(root / "one"), per_device_batch_size=1, gradient_accumulation_steps=2, save_steps=4)
    run_policy(one)
    config = root / "policy.yaml"
    config.write_text(yaml.safe_dump(dict(values, output_dir=str(root / "two"), per_device_batch_size=1,
                                          gradient_accumulation_steps=1, save_steps=4)))
    # `--multi_gpu` is accelerate's torchrun launcher; without a GPU each process runs on CPU (MULTI_CPU, gloo)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "-m", "sepo", "policy", "--config", str(config)]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", SEPO_QUIET="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(command, cwd=str(root), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((root / "two" / "metrics.json").read_text())
    # one epoch of 8 pairs in 4 steps: each of the 2 processes took 4 batches of 1 (one process alone would take 8)
    assert two["train/global_step"] == 4 == json.loads((root / "one" / "metrics.json").read_text())["train/global_step"]
    assert_same_training(trajectory(root / "one"), trajectory(root / "two"), load_file(str(Path(values["model_path"]) / "model.safetensors")))


def test_batch_of_eight_matches_eight_accumulated_batches_of_one(setup):
    root, values = setup
    values = dict(values, num_train_epochs=2, save_steps=2)  # two optimizer steps of 8 pairs each
    runs = {}
    for name, batch, accumulation in (("b8x1", 8, 1), ("b1x8", 1, 8)):
        config = PolicyConfig(**values, output_dir=str(root / name), per_device_batch_size=batch,
                              gradient_accumulation_steps=accumulation)
        assert run_policy(config)["train/global_step"] == 2
        runs[name] = trajectory(root / name)
    assert_same_training(runs["b8x1"], runs["b1x8"], load_file(str(Path(values["model_path"]) / "model.safetensors")))
