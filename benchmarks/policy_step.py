"""One policy training step, timed in a fresh process: TRL's ``DPOTrainer`` or ``sepo.trainer.PreferenceTrainer``.

A step = the trainer's own ``training_step`` (forward, loss, backward) + ``optimizer.step()`` +
``zero_grad()``, on one collated batch from the trainer's own data loader. Both trainers get the
same ``TrainingArguments`` fields (torch AdamW, float32, no gradient checkpointing, 2 threads), the
same model weights and the same token ids. Variants:

* ``trl_dpo``         TRL ``DPOTrainer`` (sigmoid DPO, reference model forward every step)
* ``sepo_full_head``  our trainer, SePO loss, LM head on every position (no reference model)
* ``sepo_used_head``  our trainer, SePO loss, LM head only at the selected tokens
* ``ours_dpo``        our trainer, DPO loss (reference model), heads at response tokens

Prints one JSON line, a list with one result per response length: step seconds (median, spread) and
peak RSS rise over the post-import baseline (meaningful for the first length of a process only).
"""

from __future__ import annotations

import argparse
import json
import tempfile

VARIANTS = ("trl_dpo", "sepo_full_head", "sepo_used_head", "ours_dpo")


def training_fields(out_dir: str, batch: int) -> dict:
    """The ``TrainingArguments`` fields both trainers share (TRL's DPOConfig defaults bf16 and checkpointing on)."""
    return dict(output_dir=out_dir, per_device_train_batch_size=batch, learning_rate=1e-5, optim="adamw_torch",
                lr_scheduler_type="constant", bf16=False, fp16=False, gradient_checkpointing=False,
                report_to=[], use_cpu=True, dataloader_num_workers=0, save_strategy="no", logging_strategy="no",
                disable_tqdm=True, seed=0)


def build_trl(variant: str, pairs: list[dict], vocab: int, max_len: int, batch: int, out_dir: str):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from bench_common import ids_to_text, tiny_llama, word_tokenizer

    tokenizer = word_tokenizer(vocab)
    rows = {"prompt": [ids_to_text(p["prompt_ids"]) + " " for p in pairs],
            "chosen": [ids_to_text(p["chosen_ids"][:-1]) + " " for p in pairs],
            "rejected": [ids_to_text(p["rejected_ids"][:-1]) + " " for p in pairs]}
    args = DPOConfig(**training_fields(out_dir, batch), beta=0.1, max_length=None, precompute_ref_log_probs=False,
                     remove_unused_columns=False)
    model, ref = tiny_llama(vocab, max_len, seed=0), tiny_llama(vocab, max_len, seed=0)
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_dict(rows),
                         processing_class=tokenizer)
    seen = trainer.train_dataset[0]
    for key in ("prompt_ids", "chosen_ids", "rejected_ids"):  # like with like: TRL tokenised our exact ids
        if list(seen[key]) != pairs[0][key]:
            raise RuntimeError(f"TRL tokenised {key} differently from the synthetic ids")
    return trainer


def build_ours(variant: str, pairs: list[dict], vocab: int, max_len: int, batch: int, out_dir: str, k: float):
    from datasets import Dataset
    from transformers import TrainingArguments

    from bench_common import tiny_llama
    from sepo.losses import get_loss
    from sepo.selectors import select_from_scores
    from sepo.trainer import PreferenceCollator, PreferenceTrainer

    import torch

    loss = get_loss("dpo" if variant == "ours_dpo" else "sepo")
    rows = {key: [p[key] for p in pairs] for key in ("prompt_ids", "chosen_ids", "rejected_ids")}
    extra: tuple[str, ...] = ()
    if loss.needs_selection:  # SePO's per-response top-k / bottom-k of (here random) token scores
        gen = torch.Generator().manual_seed(1)
        scores = {side: [torch.randn(len(r), generator=gen).tolist() for r in rows[f"{side}_ids"]] for side in ("chosen", "rejected")}
        rows["chosen_selected"], rows["rejected_selected"] = select_from_scores(
            scores["chosen"], scores["rejected"], "topk", k_w=k, k_l=k)
        extra = ("selected",)
    ref = tiny_llama(vocab, max_len, seed=0) if loss.needs_reference else None
    return PreferenceTrainer(
        model=tiny_llama(vocab, max_len, seed=0), args=TrainingArguments(**training_fields(out_dir, batch), remove_unused_columns=False, label_names=[]),
        train_dataset=Dataset.from_dict(rows), data_collator=PreferenceCollator(0, extra), loss=loss, ref_model=ref,
        head_on_used_positions=variant != "sepo_full_head",
    )


def build_trainer(variant: str, pairs: list[dict], vocab: int, max_len: int, batch: int, out_dir: str, k: float):
    """The trainer of a variant: TRL's ``DPOTrainer`` for ``trl_dpo``, ours otherwise."""
    if variant == "trl_dpo":
        return build_trl(variant, pairs, vocab, max_len, batch, out_dir)
    return build_ours(variant, pairs, vocab, max_len, batch, out_dir, k)


def make_step(trainer):
    """One optimizer step of ``trainer`` on one fixed batch from its own data loader; the step returns the loss."""
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; one batch per optimizer step here
    model, optimizer = trainer.model, trainer.optimizer
    inputs = next(iter(trainer.get_train_dataloader()))

    def step() -> float:
        loss = trainer.training_step(model, inputs)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    return step


def measure(variant: str, vocab: int, prompt_len: int, response_len: int, batch: int, steps: int, warmup: int, k: float) -> dict:
    import torch
    import trl  # noqa: F401  (imported by every variant, so the post-import baseline is the same)

    import sepo.trainer  # noqa: F401
    from bench_common import parameter_mib, peak_rss_mib, setup_torch, summary, synthetic_pairs, timed

    setup_torch()
    baseline = peak_rss_mib()
    pairs = synthetic_pairs(batch, vocab, prompt_len, response_len, seed=0)
    max_len = prompt_len + response_len
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = build_trainer(variant, pairs, vocab, max_len, batch, out_dir, k)
        model = trainer.model
        built = peak_rss_mib()
        step = make_step(trainer)
        losses: list[float] = []
        torch.manual_seed(0)
        seconds = timed(lambda: losses.append(step()), steps, warmup)
        peak = peak_rss_mib()
    return {"variant": variant, "vocab": vocab, "prompt_len": prompt_len, "response_len": response_len, "batch": batch,
            "step_seconds": summary(seconds), "peak_rise_mib": peak - baseline, "built_rise_mib": built - baseline,
            "step_rise_mib": peak - built, "baseline_mib": baseline,
            "model_mib": parameter_mib(model), "first_loss": losses[0], "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--response-len", default="96", help="response tokens; a comma list measures each in turn")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--k", type=float, default=0.3, help="SePO's selected fraction of each response")
    args = parser.parse_args()
    lengths = [int(x) for x in args.response_len.split(",")]
    print(json.dumps([measure(args.variant, args.vocab, args.prompt_len, n, args.batch, args.steps, args.warmup, args.k)
                      for n in lengths]))


if __name__ == "__main__":
    main()
