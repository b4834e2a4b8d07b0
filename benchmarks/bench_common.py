"""What every benchmark worker shares: the model, the synthetic pairs, a word-level tokenizer, timing.

The workload of the issue: a 4-layer, d=256 Llama trained from scratch, prompt of ``prompt_len``
tokens + response of ``response_len`` tokens (EOS included), batches of ``batch`` pairs, 2 CPU
threads. Token ids are random; a word-level tokenizer whose word ``t<i>`` is id ``i`` lets TRL,
which tokenises text itself, see exactly the ids our pipeline sees.

Each measurement runs in a fresh process (``python benchmarks/<worker>.py ... --json``), so peak
resident memory (``ru_maxrss``, monotone within a process) belongs to one variant only.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
THREADS = 2
SPECIAL = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2; random tokens are drawn from [len(SPECIAL), vocab)


def setup_torch(threads: int = THREADS) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    os.environ.setdefault("SEPO_QUIET", "1")  # no progress bars inside a timed region


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tiny_llama(vocab: int, max_len: int, seed: int, hidden: int = 256, layers: int = 4):
    """The benchmark model: Llama, ``layers`` x ``hidden``, 4 heads, MLP 4x, untied head, float32."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=max_len,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


def parameter_mib(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def synthetic_pairs(n: int, vocab: int, prompt_len: int, response_len: int, seed: int) -> list[dict]:
    """``n`` pairs of token ids: prompt ``prompt_len`` ids, responses ``response_len - 1`` ids + EOS."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    low = len(SPECIAL)

    def draw(length: int) -> list[int]:
        return torch.randint(low, vocab, (length,), generator=gen).tolist()

    eos = SPECIAL.index("</s>")
    return [{"prompt_ids": draw(prompt_len), "chosen_ids": draw(response_len - 1) + [eos],
             "rejected_ids": draw(response_len - 1) + [eos]} for _ in range(n)]


def word_tokenizer(vocab: int):
    """A ``PreTrainedTokenizerFast`` whose whitespace-separated word ``t<i>`` is token id ``i``."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    words = {token: i for i, token in enumerate(SPECIAL)}
    words.update({f"t{i}": i for i in range(len(SPECIAL), vocab)})
    core = Tokenizer(WordLevel(words, unk_token="<pad>"))
    core.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def ids_to_text(ids: list[int]) -> str:
    return " ".join(f"t{i}" for i in ids)


def timed(fn, repeats: int, warmup: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def summary(values: list[float]) -> dict[str, float]:
    """Median and spread (min, max) of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _worker_command(script: str, args: dict[str, object]) -> list[str]:
    cmd = [sys.executable, str(HERE / script)]
    for key, value in args.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


def _worker_env(threads: int = THREADS) -> dict[str, str]:
    return dict(os.environ, SEPO_QUIET="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(threads))


def run_worker(script: str, args: dict[str, object], threads: int = THREADS) -> dict:
    """Run ``benchmarks/<script>`` in a fresh interpreter; its last stdout line is a JSON result."""
    cmd = _worker_command(script, args)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_worker_env(threads))
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_workers_at_once(script: str, many_args: list[dict[str, object]], threads: int = 1) -> tuple[list[dict], float]:
    """Start one fresh interpreter per ``many_args`` at the same moment (as the reproduction runs notebooks side by
    side); their JSON results and the wall time until the last one finished."""
    start = time.perf_counter()
    procs = [subprocess.Popen(_worker_command(script, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT, env=_worker_env(threads)) for args in many_args]
    outputs = [proc.communicate() for proc in procs]
    seconds = time.perf_counter() - start
    for proc, (out, err) in zip(procs, outputs):
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(proc.args)} failed:\n{err[-3000:]}")
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs], seconds
