"""PreferenceTrainer: log-probs at used positions, losses against hand computation, reference handling."""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import TrainingArguments

from sepo import trainer as trainer_module
from sepo.data import tokenize_preferences
from sepo.errors import ConfigError
from sepo.losses import get_loss
from sepo.selectors import select_from_scores
from sepo.trainer import PreferenceCollator, PreferenceTrainer, train_log_summary, used_token_logps
from training_world import preference_rows, tiny_model


def naive_logps(model, input_ids, attention_mask):
    """Full-vocabulary log-softmax, shifted: (B, T-1)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


@pytest.fixture(scope="module")
def batch(tokenizer):
    data, _ = tokenize_preferences(Dataset.from_dict(preference_rows(3, seed=5)), tokenizer, max_length=64)
    chosen, rejected = select_from_scores(
        [[float((7 * i) % 5) for i in range(len(x))] for x in data["chosen_ids"]],
        [[float((3 * i) % 4) for i in range(len(x))] for x in data["rejected_ids"]], "topk", k_w=0.4, k_l=0.3,
    )
    data = data.add_column("chosen_selected", chosen).add_column("rejected_selected", rejected)
    features = [dict(row) for row in data]
    return features, PreferenceCollator(tokenizer.pad_token_id, ("selected",))(features)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_head_on_used_positions_equals_full_log_softmax(arch, tokenizer, batch):
    model = tiny_model(arch, len(tokenizer), seed=3).eval()
    _, enc = batch
    positions = enc["selected"] & enc["response_mask"]  # (2B, T-1)
    with torch.no_grad():
        full = naive_logps(model, enc["input_ids"], enc["attention_mask"])
        via_keep = used_token_logps(model, enc["input_ids"], enc["attention_mask"], positions)
        everywhere = used_token_logps(model, enc["input_ids"], enc["attention_mask"], None)
    assert torch.allclose(via_keep[positions], full[positions], atol=1e-5)
    assert (via_keep[~positions] == 0).all()
    assert torch.allclose(everywhere, full, atol=1e-5)


def test_models_without_logits_to_keep_gather_hidden_states(tokenizer, batch, monkeypatch):
    model = tiny_model("llama", len(tokenizer), seed=3).eval()
    _, enc = batch
    positions = enc["response_mask"]
    monkeypatch.setattr(trainer_module, "accepts_logits_to_keep", lambda m: False)
    with torch.no_grad():
        got = used_token_logps(model, enc["input_ids"], enc["attention_mask"], positions)
        full = naive_logps(model, enc["input_ids"], enc["attention_mask"])
    assert torch.allclose(got[positions], full[positions], atol=1e-5)


def test_selected_positions_score_the_selected_response_tokens(batch):
    features, enc = batch
    targets = enc["input_ids"][:, 1:]  # logps[:, t] scores input_ids[:, t + 1]
    for i, f in enumerate(features):
        picked = [t for t, m in zip(f["chosen_ids"], f["chosen_selected"]) if m]
        assert targets[i][enc["selected"][i]].tolist() == picked
        picked = [t for t, m in zip(f["rejected_ids"], f["rejected_selected"]) if m]
        assert targets[i + len(features)][enc["selected"][i + len(features)]].tolist() == picked


def make_trainer(tmp_path, model, tokenizer, loss, ref_model=None, head=True, **loss_kwargs):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], remove_unused_columns=False,
                             label_names=[], disable_tqdm=True)
    spec = get_loss(loss)
    extra = ("selected",) if spec.needs_selection else ()
    return PreferenceTrainer(model=model, args=args, data_collator=PreferenceCollator(tokenizer.pad_token_id, extra),
                             loss=spec, loss_kwargs=loss_kwargs, ref_model=ref_model, head_on_used_positions=head)


@pytest.mark.parametrize("head", [True, False])
def test_sepo_loss_matches_hand_computation(tmp_path, tokenizer, batch, head):
    model = tiny_model("llama", len(tokenizer), seed=4)
    features, enc = batch
    trainer = make_trainer(tmp_path, model, tokenizer, "sepo", head=head, gamma=2.0)
    loss = trainer.compute_loss(model, enc)
    with torch.no_grad():
        full = naive_logps(model, enc["input_ids"], enc["attention_mask"])
    expected = []
    n = len(features)
    for i in range(n):
        sel_w, sel_l = enc["selected"][i], enc["selected"][i + n]
        u_w = 2.0 * full[i][sel_w].mean()
        u_l = 2.0 * full[i + n][sel_l].mean()
        expected.append(-F.logsigmoid(u_w - u_l))
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-5)
    loss.backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


def test_dpo_uses_the_reference_and_starts_at_log2(tmp_path, tokenizer, batch):
    _, enc = batch
    policy = tiny_model("llama", len(tokenizer), seed=4)
    same = tiny_model("llama", len(tokenizer), seed=4)
    trainer = make_trainer(tmp_path, policy, tokenizer, "dpo", ref_model=same, beta=0.5)
    assert trainer.compute_loss(policy, enc).item() == pytest.approx(math.log(2), abs=1e-6)
    other = tiny_model("llama", len(tokenizer), seed=9)
    trainer = make_trainer(tmp_path, policy, tokenizer, "dpo", ref_model=other, beta=0.5)
    with torch.no_grad():
        lp, lr = naive_logps(policy, enc["input_ids"], enc["attention_mask"]), naive_logps(other, enc["input_ids"], enc["attention_mask"])
    ratio = ((lp - lr) * enc["response_mask"]).sum(-1)  # (2B,)
    n = ratio.shape[0] // 2
    expected = -F.logsigmoid(0.5 * (ratio[:n] - ratio[n:])).mean()
    assert trainer.compute_loss(policy, enc).item() == pytest.approx(expected.item(), abs=1e-5)


def test_reference_is_required_exactly_when_the_loss_needs_it(tmp_path, tokenizer):
    model = tiny_model("llama", len(tokenizer))
    with pytest.raises(ConfigError, match="needs a reference"):
        make_trainer(tmp_path, model, tokenizer, "dpo")
    with pytest.raises(ConfigError, match="reference-free"):
        make_trainer(tmp_path, model, tokenizer, "sepo", ref_model=tiny_model("llama", len(tokenizer)))


def test_logged_metrics_are_window_averages_and_summary_has_no_wall_clock(tmp_path, tokenizer, batch):
    model = tiny_model("llama", len(tokenizer), seed=4)
    _, enc = batch
    trainer = make_trainer(tmp_path, model, tokenizer, "simpo")
    trainer._window["train"]["rewards/margins"].extend([1.0, 3.0])
    logs = {"loss": 0.5}
    trainer.log(logs)
    assert logs["rewards/margins"] == 2.0 and not trainer._window["train"]
    history = [{"loss": 1.0, "step": 1, "rewards/margins": 0.1},
               {"loss": 0.5, "step": 2, "rewards/margins": 0.3, "learning_rate": 1e-3},
               {"train_runtime": 1.2, "train_samples_per_second": 9.0, "train_loss": 0.75, "step": 2}]
    assert train_log_summary(history) == {"train/loss_mean": 0.75, "train/loss": 0.5, "train/rewards/margins": 0.3}


def test_precomputed_reference_log_probs_give_the_same_losses_and_are_kept_for_later_runs(tmp_path, tokenizer, batch,
                                                                                           monkeypatch):
    """TRL's precompute_ref_log_probs: the reference runs once, before training, and never in a step; every loss
    that reads it (DPO, Selective-DPO) gets the values a step would compute; the cache serves the next run."""
    from sepo import scoring

    features, enc = batch
    data = Dataset.from_list([{k: f[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for f in features])
    policy = tiny_model("llama", len(tokenizer), seed=4)
    reference = tiny_model("llama", len(tokenizer), seed=9)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], remove_unused_columns=False,
                             label_names=[], disable_tqdm=True)
    computed = []
    real = scoring.response_logps
    monkeypatch.setattr(scoring, "response_logps", lambda *a, **k: computed.append(1) or real(*a, **k))

    def trainer(loss, precompute, cache=""):
        return PreferenceTrainer(model=policy, args=args, train_dataset=data, eval_dataset=data,
                                 data_collator=PreferenceCollator(tokenizer.pad_token_id), loss=get_loss(loss),
                                 ref_model=reference, precompute_ref_log_probs=precompute, precompute_ref_batch_size=2,
                                 reference_cache_dir=cache)

    for loss in ("dpo", "selective_dpo", "ipo"):
        online, once = trainer(loss, False), trainer(loss, True, str(tmp_path / "cache"))
        assert once.ref_model is None and online.ref_model is not None
        assert {"chosen_ref_logps", "rejected_ref_logps"} <= set(once.train_dataset[0]) and "chosen_ref_logps" in once.eval_dataset[0]
        batch_in = once.data_collator([dict(row) for row in once.train_dataset])
        assert batch_in["ref_logps"].shape == enc["response_mask"].shape
        assert (batch_in["ref_logps"][~enc["response_mask"]] == 0).all()
        with torch.no_grad():
            expected = online.compute_loss(policy, enc).item()
            assert once.compute_loss(policy, batch_in).item() == pytest.approx(expected, abs=1e-5)
    assert len(computed) == 1  # the train and eval pairs are the same rows: one computation, then the cache
    changed = tiny_model("llama", len(tokenizer), seed=10)
    PreferenceTrainer(model=policy, args=args, train_dataset=data, data_collator=PreferenceCollator(tokenizer.pad_token_id),
                      loss=get_loss("dpo"), ref_model=changed, precompute_ref_log_probs=True, precompute_ref_batch_size=2,
                      reference_cache_dir=str(tmp_path / "cache"))
    assert len(computed) == 2  # other reference weights: computed again
    PreferenceTrainer(model=policy, args=args, train_dataset=data.select([0, 1]),
                      data_collator=PreferenceCollator(tokenizer.pad_token_id), loss=get_loss("dpo"), ref_model=reference,
                      precompute_ref_log_probs=True, precompute_ref_batch_size=2, reference_cache_dir=str(tmp_path / "cache"))
    assert len(computed) == 3  # other pairs: computed again


@pytest.mark.parametrize("loss", ["sepo", "dpo"])
def test_length_buckets_give_the_whole_batchs_loss_and_gradients(tmp_path, tokenizer, batch, loss):
    """Rows run in groups of similar length, each cut to its own longest row: the loss and every gradient are the
    whole padded batch's, up to float rounding."""
    features, enc = batch
    results = []
    for buckets in (1, 2, 3, 6):
        model = tiny_model("llama", len(tokenizer), seed=4)
        ref = tiny_model("llama", len(tokenizer), seed=9) if loss == "dpo" else None
        trainer = make_trainer(tmp_path, model, tokenizer, loss, ref_model=ref)
        trainer.length_buckets = buckets
        value = trainer.compute_loss(model, enc)
        value.backward()
        results.append((value.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])))
    for value, grads in results[1:]:
        assert value == pytest.approx(results[0][0], abs=1e-6)
        assert torch.allclose(grads, results[0][1], atol=1e-6)
    left = enc["attention_mask"].flip(1)  # left padding cannot be cut from the right
    with pytest.raises(ValueError, match="right-padded"):
        trainer_module.bucketed_token_logps(tiny_model("llama", len(tokenizer)), enc["input_ids"], left, None, buckets=2)
