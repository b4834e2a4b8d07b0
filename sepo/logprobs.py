"""Per-token log-probabilities, and the shift convention used everywhere in the package.

**Shift convention.** For a batch ``input_ids`` of shape (B, T), ``token_logps`` returns a (B, T-1)
tensor ``logps`` with::

    logps[:, t] = log p(input_ids[:, t + 1] | input_ids[:, : t + 1])

i.e. position ``t`` holds the score of the *next* token. A response token at sequence position
``s`` is therefore scored by ``logps[:, s - 1]``, and response token ``i`` after a prompt of ``P``
tokens by ``logps[:, P - 1 + i]`` (:func:`response_positions`, which :func:`sepo.data.build_sequences`
uses to place masks, selections and scores). Every other module reads log-probs through this file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def response_positions(prompt_len: int, n_response: int) -> slice:
    """The log-prob positions that score response tokens ``0 .. n_response - 1`` after ``prompt_len`` prompt tokens."""
    return slice(prompt_len - 1, prompt_len - 1 + n_response)


class _PickedLogSoftmax(torch.autograd.Function):
    """``log_softmax(logits)[i, index[i]]`` for (N, V) float32/float64 logits, chunk by chunk in both directions.

    Forward keeps only the (N,) log-normalisers; backward writes ``d logits`` straight into one
    (N, V) tensor, chunk by chunk: ``-g * softmax(logits)`` plus ``g`` at the picked entry. Autograd
    through sliced chunks would instead allocate a zero (N, V) gradient per chunk and add them up.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, index: torch.Tensor, rows: int) -> torch.Tensor:
        lse = torch.empty(logits.shape[0], dtype=logits.dtype, device=logits.device)
        for start in range(0, logits.shape[0], rows):
            lse[start : start + rows] = torch.logsumexp(logits[start : start + rows], dim=-1)
        ctx.save_for_backward(logits, index, lse)
        ctx.rows = rows
        return torch.gather(logits, -1, index[:, None]).squeeze(-1) - lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, index, lse = ctx.saved_tensors
        out = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.rows):
            part, g = out[start : start + ctx.rows], grad[start : start + ctx.rows, None]  # (r, V) view, (r, 1)
            torch.sub(logits[start : start + ctx.rows], lse[start : start + ctx.rows, None], out=part)
            part.exp_().mul_(-g)  # -g * softmax
            part.scatter_add_(-1, index[start : start + ctx.rows, None], g)  # + g at the picked token
        return out, None, None


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor, chunk_elements: int = 1 << 22) -> torch.Tensor:
    """``log_softmax(logits, -1).gather(-1, index[..., None])[..., 0]`` without a second logits-sized tensor.

    ``logits`` (..., V), ``index`` (...) -> (...). Rows are processed in chunks of at most
    ``chunk_elements`` logits, so the temporaries of the normaliser never exceed one chunk; in
    float32/float64 the backward pass writes the logits' gradient in place, chunk by chunk
    (:class:`_PickedLogSoftmax`), so it too makes one logits-sized tensor, the gradient itself. In
    low precision (bfloat16/float16), where ``logit - logsumexp`` loses accuracy, each chunk's
    log-softmax is computed in its own dtype instead.
    """
    if logits.dim() > 2:
        # one leading slice at a time: a slice like logits[:, :-1] is not contiguous, and flattening
        # it would copy the whole tensor
        return torch.stack([selective_log_softmax(part, idx, chunk_elements) for part, idx in zip(logits, index)])
    if logits.shape[0] == 0:
        return logits.new_zeros(index.shape)
    rows = max(1, chunk_elements // max(logits.shape[-1], 1))
    if logits.dtype in (torch.float32, torch.float64):
        return _PickedLogSoftmax.apply(logits, index, rows)
    out = []
    for start in range(0, logits.shape[0], rows):
        chunk, chunk_index = logits[start : start + rows], index[start : start + rows, None]  # (r, V) view, (r, 1)
        out.append(F.log_softmax(chunk, dim=-1).gather(-1, chunk_index).squeeze(-1))
    return torch.cat(out)


def naive_token_logps(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Reference implementation of the shift convention (materialises the full log-softmax)."""
    return torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def _head(model) -> torch.nn.Module:
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (LM head)")
    return head


def _apply_logit_transforms(model, logits: torch.Tensor) -> torch.Tensor:
    """Apply the final-logit soft-capping/scaling some architectures define (Gemma, Cohere, ...)."""
    cfg = model.config
    scale = getattr(cfg, "logit_scale", None)
    if scale is not None:
        logits = logits * scale
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def token_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token log-probs of ``input_ids`` under ``model`` (see the module's shift convention).

    ``input_ids``, ``attention_mask``: (B, T). Returns (B, T-1) float32.

    With ``positions`` (bool, (B, T-1)), the LM head and log-softmax run only at the true
    positions (the others are 0): the transformer body runs once, then the hidden states of the
    wanted positions are gathered, ``(N, d)``, and only ``(N, V)`` logits exist instead of
    ``(B, T, V)``. With a large vocabulary this is most of the cost of a step.
    """
    if positions is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, T, V)
        return selective_log_softmax(logits[:, :-1], input_ids[:, 1:]).float()
    if positions.shape != (input_ids.shape[0], input_ids.shape[1] - 1):
        raise ValueError(f"positions has shape {tuple(positions.shape)}, expected {(input_ids.shape[0], input_ids.shape[1] - 1)}")
    body = model.base_model
    hidden = body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, d)
    picked = hidden[:, :-1][positions]  # (N, d)
    logits = _apply_logit_transforms(model, _head(model)(picked))  # (N, V)
    targets = input_ids[:, 1:][positions]  # (N,)
    out = torch.zeros(positions.shape, dtype=torch.float32, device=input_ids.device)
    if picked.shape[0]:
        out[positions] = selective_log_softmax(logits, targets).float()
    return out
