"""The shift convention and the memory-lean log-prob helper."""

import pytest
import torch

from sepo.logprobs import naive_token_logps, response_positions, selective_log_softmax, token_logps


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("chunk_elements", [7, 1 << 22])
def test_selective_log_softmax_equals_gather_of_log_softmax(dtype, atol, chunk_elements):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 5, 101, generator=g) * 4).to(dtype)
    index = torch.randint(0, 101, (3, 5), generator=g)
    expected = torch.log_softmax(logits.double(), -1).gather(-1, index[..., None]).squeeze(-1)
    got = selective_log_softmax(logits, index, chunk_elements=chunk_elements)
    same_dtype_naive = torch.log_softmax(logits, -1).gather(-1, index[..., None]).squeeze(-1)
    assert got.shape == (3, 5) and got.dtype == dtype
    assert torch.allclose(got.double(), same_dtype_naive.double(), atol=atol)
    assert torch.allclose(got.double(), expected, atol=atol, rtol=1e-2)


@pytest.mark.parametrize("chunk_elements", [7, 250, 1 << 22])  # one row per chunk, a few rows, all rows at once
def test_selective_log_softmax_gradient_matches_autograd_of_log_softmax(chunk_elements):
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(9, 101, generator=g, dtype=torch.float64) * 3).requires_grad_()
    index = torch.randint(0, 101, (9,), generator=g)
    weights = torch.randn(9, generator=g, dtype=torch.float64)  # an upstream gradient that differs per row
    (selective_log_softmax(logits, index, chunk_elements=chunk_elements) * weights).sum().backward()
    reference = logits.detach().clone().requires_grad_()
    (torch.log_softmax(reference, -1).gather(-1, index[:, None]).squeeze(-1) * weights).sum().backward()
    assert torch.allclose(logits.grad, reference.grad, atol=1e-12)
    small = logits.detach()[:4].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: selective_log_softmax(x, index[:4], chunk_elements=chunk_elements), (small,))


def test_shift_convention_position_t_scores_token_t_plus_1(model_pair):
    """logps[:, t] must be log p(input_ids[t+1] | input_ids[:t+1]), computed here from prefixes alone."""
    model = model_pair[0]
    ids = torch.tensor([[5, 17, 42, 9, 77, 3]])
    logps = token_logps(model, ids, torch.ones_like(ids))
    assert logps.shape == (1, 5)
    for t in range(5):
        prefix_logits = model(input_ids=ids[:, : t + 1]).logits[0, -1]
        expected = torch.log_softmax(prefix_logits, -1)[ids[0, t + 1]]
        assert logps[0, t].item() == pytest.approx(expected.item(), abs=1e-5)


def test_response_positions_pick_the_response_tokens(model_pair):
    """Response token i after a prompt of P tokens is scored at logps[:, P - 1 + i]."""
    model = model_pair[0]
    prompt, response = [5, 17, 42], [9, 77, 3]
    ids = torch.tensor([prompt + response])
    logps = token_logps(model, ids, torch.ones_like(ids))
    at = response_positions(len(prompt), len(response))
    assert ids[0, 1:][at].tolist() == response
    for i, token in enumerate(response):
        prefix_logits = model(input_ids=torch.tensor([prompt + response[:i]])).logits[0, -1]
        assert logps[0, at][i].item() == pytest.approx(torch.log_softmax(prefix_logits, -1)[token].item(), abs=1e-5)


def test_token_logps_matches_naive_and_ignores_right_padding(model_pair):
    model = model_pair[0]
    ids = torch.tensor([[4, 8, 15, 16, 23, 42], [4, 8, 15, 0, 0, 0]])
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    logps = token_logps(model, ids, mask)
    naive = naive_token_logps(model(input_ids=ids, attention_mask=mask).logits, ids)
    assert torch.allclose(logps, naive, atol=1e-5)
    alone = token_logps(model, ids[1:, :3], mask[1:, :3])
    assert torch.allclose(logps[1, :2], alone[0], atol=1e-5)


def test_head_only_at_positions_equals_full_head_there(model_pair):
    model = model_pair[1]
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 200, (3, 9), generator=g)
    full = token_logps(model, ids, torch.ones_like(ids))
    positions = torch.rand(3, 8, generator=g) > 0.5
    partial = token_logps(model, ids, torch.ones_like(ids), positions)
    assert torch.allclose(partial[positions], full[positions], atol=1e-5)
    assert (partial[~positions] == 0).all()
    with pytest.raises(ValueError, match="positions has shape"):
        token_logps(model, ids, torch.ones_like(ids), positions[:, :-1])


def test_gradient_flows_only_through_used_positions(model_pair):
    model = model_pair[0]
    ids = torch.tensor([[4, 8, 15, 16, 23]])
    positions = torch.tensor([[False, True, False, False]])
    model.zero_grad()
    token_logps(model, ids, torch.ones_like(ids), positions).sum().backward()
    grad = model.get_output_embeddings().weight.grad
    assert grad is not None and grad.abs().sum() > 0
    model.zero_grad()
