"""The notebooks at the paper tier, offline: papermill runs them with ``configs/paper/<notebook>.yaml`` whose
experiment points at tiny random GPT-NeoX (oracle) and Llama (policy) models, an UltraFeedback-layout
dataset made here, and the fake OpenAI-compatible judge server answering AlpacaEval 2, MT-Bench and
Arena-Hard prompts in their real formats. The same cells as at the mini tier; no gold judge is used."""

import json
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict

from conftest import train_tiny_tokenizer
from sepo.errors import ConfigError
from training_world import CHAT_TEMPLATE, ultrafeedback_rows, write_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_notebooks")
    tokenizer = train_tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE  # SFT models made by `sepo sft` carry their chat template
    data = root / "ultrafeedback_binarized"
    DatasetDict({"train_prefs": Dataset.from_dict(ultrafeedback_rows(8, 0)),
                 "test_prefs": Dataset.from_dict(ultrafeedback_rows(4, 1))}).save_to_disk(str(data))
    models = {"pythia-tiny": str(write_model(root / "pythia-tiny", arch="gpt_neox", tokenizer=tokenizer, seed=0)),
              "llama-tiny": str(write_model(root / "llama-tiny", arch="llama", tokenizer=tokenizer, seed=1))}
    return {"root": root, "data": str(data), "models": models}


def experiment(paper_world, base_url: str, tmp_path: Path, **paper) -> dict:
    """A paper-tier experiment on the tiny world: the shape of configs/paper/base.yaml, sizes and budgets cut."""
    base = yaml.safe_load((REPO / "configs" / "paper" / "base.yaml").read_text())
    base.update(cache_dir=str(tmp_path / "cache"), seeds=[0], oracle_size="pythia-tiny", policy_size="llama-tiny",
                oracle_epochs=1.0, oracle_lr=1e-3, policy_lr=1e-3, policy_epochs=1.0, batch_size=2, max_length=48,
                max_prompt_length=24, logging_steps=1, score_batch_size=4, eval_prompts=2, validation_prompts=1,
                policy_lr_grid=[], eval_samples=1, eval_batch_size=2, max_new_tokens=4)
    base["paper"] = {**base["paper"], "models": paper_world["models"], "data": paper_world["data"],
                     "max_eval_pairs": 2, "gradient_accumulation_steps": 1, "bf16": False, "gradient_checkpointing": False,
                     "accelerate_config": "", "num_processes": 1, "device": "cpu", "base_url": base_url,
                     "api_key_env": "FAKE_JUDGE_KEY", "baseline_outputs": {}, "lc_df_gamed_path": "",
                     "drop_prompt_longer_than": 0, "drop_response_shorter_than": 0, "bootstrap_rounds": 10, **paper}
    path = tmp_path / "experiment.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(base))
    # what a notebook's paper YAML may also set (sizes, the paper mapping) is replaced too
    return {"experiment": str(path), **{k: base[k] for k in ("oracle_size", "policy_size", "paper")}}


@pytest.fixture
def judge_server(monkeypatch):
    from fake_openai import FakeJudgeServer

    monkeypatch.setenv("FAKE_JUDGE_KEY", "sk-test")
    with FakeJudgeServer() as server:
        yield server



def judged_formats(calls: list[dict]) -> dict[str, int]:
    """How many requests the fake judge got in each benchmark's format."""
    counts = {"alpaca_eval": 0, "mt_bench": 0, "arena_hard": 0}
    for call in calls:
        text = " ".join(m["content"] for m in call["messages"])
        key = ("alpaca_eval" if '"model_identifier": "m"' in text else "arena_hard" if "<|User Prompt|>" in text
               else "mt_bench")
        counts[key] += 1
    return counts


def test_main_table_notebook_at_the_paper_tier(paper_world, judge_server, tmp_path, monkeypatch):
    """04_main_table with configs/paper/04_main_table.yaml: every method trained on the UltraFeedback-layout
    pairs with the paper tier's settings, and judged on AlpacaEval 2, MT-Bench and Arena-Hard."""
    from sepo.notebook import config_from
    from sepo.pipeline import Pipeline
    from sepo.reproduce import run_notebook
    from sepo.tables import main_table

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the kernel imports this checkout's sepo
    parameters = {**experiment(paper_world, judge_server.base_url, tmp_path), "policy_lr": 0.05}  # policies that move
    run_notebook("04_main_table", "paper", tmp_path / "results", overrides={**parameters, "methods": ["DPO", "SePO"]})
    out = tmp_path / "results" / "04_main_table"
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {r["method"]: r for r in metrics["rows"]}
    assert set(rows) == {"SFT", "DPO", "SePO"} and metrics["methods"] == ["DPO", "SePO"]
    for row in rows.values():
        assert 0 <= row["win_rate"] <= 1 and row["win_rate"] == row["alpaca_eval_wr_vs_sft"]
        assert 1 <= row["mt_bench"] <= 10 and 1 <= row["mt_bench_turn_2"] <= 10 and 0 <= row["arena_hard"] <= 1
        assert row["reward"] is None  # no gold reward at this tier: written as null, not made up
        assert len(row["eval_run"].split(";")) == 3
    assert rows["SFT"]["win_rate"] == 0.5 and rows["SFT"]["kl"] == 0.0  # the SFT model against its own samples
    assert {"C2", "R5"} <= set(metrics["claims"])
    assert (out / "win_rate.png").exists() and (out / "main_table.md").exists()
    calls = judged_formats(judge_server.calls)
    # 3 models x 2 prompts: Arena-Hard 2 games each, MT-Bench 2 turns x (model + SFT); AlpacaEval's annotator
    # asks only about pairs whose outputs differ (the SFT model against its own samples: none; a policy that
    # barely moved from its SFT model draws the same tokens with the same seed)
    differ = 0
    for row in rows.values():
        for run in (REPO / r for r in row["eval_run"].split(";")):
            if yaml.safe_load((run / "config.yaml").read_text())["judge"] == "alpaca_eval":
                pairs = zip(json.loads((run / "outputs.json").read_text()), json.loads((run / "reference_outputs.json").read_text()))
                differ += sum(a["output"] != b["output"] for a, b in pairs)
    assert calls["arena_hard"] == 12 and calls["mt_bench"] == 24, calls
    assert 1 <= calls["alpaca_eval"] <= differ, (calls, differ)
    # the paper tier's training settings reached the stages
    policy = yaml.safe_load((REPO / rows["SePO"]["run"] / "config.yaml").read_text())  # runs are named relative to the project
    assert policy["lr_scheduler_type"] == "cosine"
    assert policy["chat_template"] == (REPO / "configs" / "paper" / "chat_template.jinja").read_text()  # by content
    assert policy["selection_kwargs"] == {} and policy["loss"] == "sepo"
    # same config, same cache: the table again without one new judge call or training run
    before = len(judge_server.calls)
    config = config_from({**parameters, "methods": ["DPO", "SePO"]}, notebook={"methods": list[str]})
    frame = main_table(Pipeline(config), ["DPO", "SePO"])[0]
    assert len(judge_server.calls) == before
    assert frame.set_index("method").win_rate.to_dict() == {m: r["win_rate"] for m, r in rows.items()}


SWEEPS = {  # each notebook's sweep cut to the tiny world (sizes: keys of paper.models)
    "02_oracle": {"fractions": [0.5, 1.0], "k": 0.3, "train_policies": True, "curve_sizes": ["pythia-tiny"]},
    "05_ablations": {"ks": [0.3, 1.0], "k_ls": [], "gammas": [], "oracle_betas": [], "masses": []},
    "06_weak_to_strong": {"oracle_sizes": ["pythia-tiny"], "policy_sizes": ["llama-tiny", "pythia-tiny"]},
    "07_ood_overoptimization": {"methods": ["DPO", "SePO"], "frontier_epochs": 1.0, "save_steps": 0},
    "08_selective_dpo": {"strong_size": "pythia-tiny", "ks": [0.4]},
    "10_benchmarks": {"prompt_set": "alpaca_eval", "judge": "arena_hard", "policy_method": "SePO"},
}



def hh_rlhf_layout(path: Path, n: int) -> str:
    """Off-target pairs in TRL's conversational layout (prompt messages, one-message answers), as TRL's HH-RLHF copies."""
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for i in range(n):
        rows["prompt"].append([{"role": "user", "content": f"can you help me with the room {i} ?"}])
        rows["chosen"].append([{"role": "assistant", "content": "the room was clean and the staff was kind ."}])
        rows["rejected"].append([{"role": "assistant", "content": "no ."}])
    DatasetDict({"train": Dataset.from_dict(rows)}).save_to_disk(str(path))
    return str(path)


def check(name: str, metrics: dict, out: Path) -> None:
    """What each notebook's results must hold at the paper tier."""
    frame = metrics.get("rows", [])
    if name == "02_oracle":  # no gold credit at this tier: no world card, precision not measured; the policies are
        assert [r["fraction"] for r in frame] == [0.5, 1.0] and [r["oracle_pairs"] for r in frame] == [2, 4]
        assert all(r["chosen_precision"] is None for r in frame) and not (out.parent / "world_card.json").exists()
        frame = [{"win_rate": r["policy_win_rate"], "reward": r["policy_reward"]} for r in frame]
    elif name == "05_ablations":
        assert {(r["parameter"], r["value"]) for r in frame} == {("k", 0.3), ("k", 1.0)}
    elif name == "06_weak_to_strong":
        assert {(r["method"], r["oracle_size"], r["policy_size"]) for r in frame} == {
            ("SePO", "pythia-tiny", "llama-tiny"), ("SePO", "pythia-tiny", "pythia-tiny"),
            ("DPO", "-", "llama-tiny"), ("DPO", "-", "pythia-tiny")}
        assert "C4" in metrics["claims"]
    elif name == "07_ood_overoptimization":
        assert {r["method"] for r in frame} == {"DPO", "SePO"} and metrics["frontier"] == []  # no gold reward: no frontier
        for row in frame:  # trained on the 6 off-target pairs, not on the 4 target pairs of the train split
            assert json.loads((REPO / row["run"] / "metrics.json").read_text())["data/train_pairs"] == 6
    elif name == "08_selective_dpo":
        assert {r["reference"] for r in frame} == {"weak (policy SFT)", "strong (DPO pythia-tiny)", "-"}
    elif name == "10_benchmarks":
        assert metrics["judge"] == "LLM judge: arena_hard" and metrics["prompt_set"] == "alpaca_eval"
        assert {s["benchmark"] for s in metrics["scores"]} == {"Arena-Hard"} and (out / "benchmark_scores.png").exists()
        frame = [metrics["summary"]]
    assert frame and all(0 <= r["win_rate"] <= 1 and r["reward"] is None for r in frame)


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_notebook_at_the_paper_tier(name, paper_world, judge_server, tmp_path, monkeypatch):
    from sepo.reproduce import run_notebook

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    paper = {"ood_data": hh_rlhf_layout(tmp_path / "hh", 6), "ood_split": "train"} if name.startswith("07") else {}
    parameters = experiment(paper_world, judge_server.base_url, tmp_path, benchmarks=["alpaca_eval"], **paper)
    run_notebook(name, "paper", tmp_path / "results", overrides={**parameters, **SWEEPS[name]})
    out = tmp_path / "results" / name
    check(name, json.loads((out / "metrics.json").read_text()), out)


# --------------------------------------------------------------------------------------------
# What stops a paper run before any training or sampling
# --------------------------------------------------------------------------------------------
def paper_config(paper_world, tmp_path, **paper):
    from sepo.notebook import config_from

    return config_from(experiment(paper_world, "http://127.0.0.1:9/v1", tmp_path, **paper), notebook={})


def test_a_missing_api_key_stops_before_anything_is_made(paper_world, tmp_path, monkeypatch):
    from sepo.pipeline import Pipeline

    monkeypatch.delenv("FAKE_JUDGE_KEY", raising=False)
    with pytest.raises(ConfigError, match="set the environment variable FAKE_JUDGE_KEY"):
        Pipeline(paper_config(paper_world, tmp_path))
    assert not any((tmp_path / "cache").rglob("*.arrow"))  # no data prepared, no model trained


def test_a_model_neither_local_nor_cached_stops_with_what_to_do(paper_world, tmp_path, monkeypatch):
    from sepo.pipeline import Pipeline

    monkeypatch.setenv("FAKE_JUDGE_KEY", "sk-test")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing is asked of the network
    models = {**paper_world["models"], "llama-tiny": "no-such-owner/no-such-model"}
    with pytest.raises(ConfigError, match=r"paper.models.llama-tiny = 'no-such-owner/no-such-model': not in the Hugging Face "
                                          r"cache and HF_HUB_OFFLINE is set; download it first"):
        Pipeline(paper_config(paper_world, tmp_path, models=models))
    with pytest.raises(ConfigError, match="paper.data = 'no/such-data': not in the Hugging Face cache"):
        Pipeline(paper_config(paper_world, tmp_path, data="no/such-data"))
    with pytest.raises(ConfigError, match="model size 'llama-tiny' is not in paper.models"):
        Pipeline(paper_config(paper_world, tmp_path, models={"pythia-tiny": paper_world["models"]["pythia-tiny"]}))


def test_a_model_without_chat_template_and_a_bad_row_stop_early(paper_world, tmp_path, monkeypatch):
    from sepo.errors import DataError
    from sepo.pipeline import Pipeline

    monkeypatch.setenv("FAKE_JUDGE_KEY", "sk-test")
    bare = write_model(tmp_path / "bare", arch="llama", tokenizer=train_tiny_tokenizer(), seed=2)  # no chat template
    with pytest.raises(ConfigError, match="paper.models.llama-tiny = .*its tokenizer has no chat template"):
        Pipeline(paper_config(paper_world, tmp_path, models={**paper_world["models"], "llama-tiny": str(bare)}))
    rows = ultrafeedback_rows(4, 0)
    rows["rejected"][2] = [rows["rejected"][2][0]]  # no assistant answer
    bad = tmp_path / "bad"
    DatasetDict({"train_prefs": Dataset.from_dict(rows), "test_prefs": Dataset.from_dict(ultrafeedback_rows(2, 1))}).save_to_disk(str(bad))
    with pytest.raises(DataError, match=r"row 2.*field 'rejected' must end with an assistant message"):
        Pipeline(paper_config(paper_world, tmp_path, data=str(bad)))
    assert not (tmp_path / "cache" / "oracle").exists() and not list((tmp_path / "cache" / "paper").rglob("dataset_dict.json"))


def test_a_training_stage_runs_through_accelerate_launch_into_the_same_cache(paper_world, tmp_path, monkeypatch):
    """With paper.accelerate_config the policy stage runs as `accelerate launch -m sepo policy` (2 CPU processes,
    gloo) and lands in the cache as an in-process run does; it trains like one process accumulating 2 batches."""
    import socket

    from safetensors.torch import load_file

    from sepo.pipeline import Pipeline

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = tmp_path / "accelerate.yaml"  # accelerate's MULTI_GPU launcher; without a GPU each process runs on CPU
    launch.write_text(yaml.safe_dump({"compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU",
                                      "num_machines": 1, "machine_rank": 0, "num_processes": 2, "mixed_precision": "no",
                                      "main_process_port": port, "use_cpu": False}))
    runs = {}
    for name, paper, batch in (("launched", {"accelerate_config": str(launch), "num_processes": 2}, 1),
                               ("in_process", {"gradient_accumulation_steps": 2}, 1)):
        config = paper_config(paper_world, tmp_path / name, benchmarks=[], **paper)
        config = type(config).from_dict({**config.to_dict(), "batch_size": batch, "policy_lr": 1e-2})
        pipe = Pipeline(config)
        runs[name] = pipe.policy(pipe.method("DPO"), 0)
    (launched, metrics), (alone, alone_metrics) = runs["launched"], runs["in_process"]
    assert launched.parent == tmp_path / "launched" / "cache" / "policy" and (launched / "config.yaml").exists()
    assert metrics["train/global_step"] == alone_metrics["train/global_step"] == 2  # 4 pairs, 2 per optimizer step
    a, b = load_file(str(launched / "model" / "model.safetensors")), load_file(str(alone / "model" / "model.safetensors"))
    initial = load_file(str(Path(paper_world["models"]["llama-tiny"]) / "model.safetensors"))
    assert max((a[k] - initial[k]).abs().max().item() for k in a) > 1e-3  # training moved the weights
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5


# --------------------------------------------------------------------------------------------
# The paper YAMLs: the paper's setting, valid parameters, and the estimate their headers state
# --------------------------------------------------------------------------------------------
def paper_notebook_yamls() -> list[Path]:
    return sorted((REPO / "configs" / "paper").glob("[0-9][0-9]_*.yaml"))


def test_paper_yamls_hold_the_papers_setting_and_their_estimate():
    import inspect
    import sys

    from sepo.methods import method
    from sepo.notebook import config_from
    from sepo.reproduce import NOTEBOOKS
    from sepo.paper_tier import PaperTierConfig

    sys.path.insert(0, str(REPO / "benchmarks"))
    from compute_estimate import hours_text, paper_notebook_estimate

    names = {path.stem for path in paper_notebook_yamls()}
    assert {"02_oracle", "04_main_table", "05_ablations", "06_weak_to_strong", "07_ood_overoptimization",
            "08_selective_dpo", "10_benchmarks"} <= names <= set(NOTEBOOKS) | {"04_main_table_pythia"}
    for path in paper_notebook_yamls():
        values = yaml.safe_load(path.read_text())
        own = {k: v for k, v in values.items() if k not in ("experiment",)}
        config = config_from(values, notebook={})  # every shared parameter has its type; the paper mapping is valid
        paper = PaperTierConfig.from_dict(config.paper)
        assert config.tier == "paper" and config.policy_lr == 5e-7 and config.policy_epochs == 1 and paper.bf16, path.name
        assert config.batch_size * paper.gradient_accumulation_steps * paper.num_processes == 128, path.name
        sizes = [config.oracle_size, config.policy_size] + [s for k in ("oracle_sizes", "policy_sizes") for s in own.get(k, [])]
        sizes += [own["strong_size"]] if "strong_size" in own else []
        assert all(s in paper.models for s in sizes), path.name
        for name in own.get("methods", []):
            method(name, config.method_settings.get(name))
        assert hours_text(paper_notebook_estimate(path)) in path.read_text(), f"{path.name}: rerun compute_estimate.py --paper"
        assert "GPU" in path.read_text().split("experiment:")[0] and "OPENAI_API_KEY" in path.read_text()
    from sepo.reproduce import main as reproduce

    with pytest.raises(SystemExit, match=r"no configs/paper/<name>.yaml for \['01_walkthrough'\]: .* mini tier only"):
        reproduce(["--tier", "paper", "--only", "01_walkthrough", "04_main_table"])  # refused before any notebook runs
    main = yaml.safe_load((REPO / "configs" / "paper" / "04_main_table.yaml").read_text())
    assert main["methods"] == ["DPO", "IPO", "SimPO", "RRHF", "SePO"]
    base = PaperTierConfig.from_dict(yaml.safe_load((REPO / "configs" / "paper" / "base.yaml").read_text())["paper"])
    assert (base.data, base.train_split, base.drop_prompt_longer_than, base.drop_response_shorter_than) == (
        "HuggingFaceH4/ultrafeedback_binarized", "train_prefs", 1900, 8)
    assert base.benchmarks == ["alpaca_eval", "mt_bench", "arena_hard"]
    w2s = yaml.safe_load((REPO / "configs" / "paper" / "06_weak_to_strong.yaml").read_text())
    assert "pythia-410m" in w2s["oracle_sizes"] and "pythia-6.9b" in w2s["policy_sizes"]
    from sepo.selectors import topk_selector

    sepo = method("SePO")  # the headline k = 0.3: the top-k selector's defaults, not overridden
    assert sepo.selector == "topk" and not sepo.selection_kwargs and not main.get("method_settings")
    assert {n: p.default for n, p in inspect.signature(topk_selector).parameters.items() if n in ("k_w", "k_l")} == {"k_w": 0.3, "k_l": 0.3}


def test_prepared_splits_are_made_once_and_follow_the_data(paper_world, tmp_path, monkeypatch):
    from datasets import load_from_disk

    from sepo.pipeline import Pipeline

    monkeypatch.setenv("FAKE_JUDGE_KEY", "sk-test")
    data = tmp_path / "uf"
    DatasetDict({"train_prefs": Dataset.from_dict(ultrafeedback_rows(6, 0)),
                 "test_prefs": Dataset.from_dict(ultrafeedback_rows(2, 1))}).save_to_disk(str(data))
    first = Pipeline(paper_config(paper_world, tmp_path, data=str(data))).world.root
    assert Pipeline(paper_config(paper_world, tmp_path, data=str(data))).world.root == first  # datasets' cache files aside
    splits = load_from_disk(str(first / "id"))
    assert {k: len(v) for k, v in splits.items()} == {"oracle": 3, "train": 3, "eval": 2}
    row = splits["train"][0]  # TRL's conversational layout: prompt turns, then the last answer alone
    assert row["prompt"][-1]["role"] == "user" and [m["role"] for m in row["chosen"]] == ["assistant"]
    DatasetDict({"train_prefs": Dataset.from_dict(ultrafeedback_rows(6, 7)),
                 "test_prefs": Dataset.from_dict(ultrafeedback_rows(2, 1))}).save_to_disk(str(tmp_path / "uf2"))
    import shutil

    shutil.rmtree(data)
    shutil.copytree(tmp_path / "uf2", data)  # other data at the same path: prepared again
    assert Pipeline(paper_config(paper_world, tmp_path, data=str(data))).world.root != first
