"""Every registered loss against values computed by hand, including empty masks."""

import math

import pytest
import torch

from sepo.errors import ConfigError
from sepo.losses import LOSSES, PairLogps, get_loss


def logsig(x):
    return -math.log1p(math.exp(-x))


def pair():
    """One pair: chosen has 3 tokens (log-probs -1, -2, -3), rejected 2 tokens (-1, -4) plus padding."""
    return PairLogps(
        policy_chosen=torch.tensor([[-1.0, -2.0, -3.0]]),
        policy_rejected=torch.tensor([[-1.0, -4.0, 0.0]]),
        chosen_mask=torch.tensor([[True, True, True]]),
        rejected_mask=torch.tensor([[True, True, False]]),
        chosen_selected=torch.tensor([[True, False, False]]),
        rejected_selected=torch.tensor([[False, True, False]]),
        ref_chosen=torch.tensor([[-1.5, -2.0, -2.0]]),
        ref_rejected=torch.tensor([[-2.0, -3.0, 0.0]]),
    )


def test_registry_names_and_needs():
    assert set(LOSSES) == {"sepo", "dpo", "ipo", "simpo", "rrhf", "selective_dpo", "confpo"}
    assert {n for n, s in LOSSES.items() if s.needs_reference} == {"dpo", "ipo", "selective_dpo"}
    assert {n for n, s in LOSSES.items() if s.needs_selection} == {"sepo"}


def test_sepo_by_hand():
    out = get_loss("sepo")(pair(), gamma=2.0, margin=0.5)
    u_w, u_l = 2.0 * -1.0, 2.0 * -4.0
    assert out.losses.item() == pytest.approx(-logsig(u_w - u_l - 0.5), abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(u_w) and out.rejected_rewards.item() == pytest.approx(u_l)
    m = out.metrics()
    assert m["rewards/accuracies"] == 1.0 and m["rewards/margins"] == pytest.approx(6.0)
    assert m["tokens/chosen_used"] == 1.0


def test_sepo_empty_selection_contributes_zero():
    p = pair()
    p.chosen_selected = torch.zeros_like(p.chosen_selected)
    out = get_loss("sepo")(p)
    assert out.chosen_rewards.item() == 0.0
    assert out.losses.item() == pytest.approx(-logsig(0.0 - (-4.0)), abs=1e-6)


def test_sepo_gradient_only_on_selected_tokens():
    p = pair()
    p.policy_chosen.requires_grad_(True)
    p.policy_rejected.requires_grad_(True)
    get_loss("sepo")(p).losses.sum().backward()
    assert (p.policy_chosen.grad[0, 1:] == 0).all() and p.policy_chosen.grad[0, 0] < 0
    assert p.policy_rejected.grad[0, 0] == 0 and p.policy_rejected.grad[0, 1] > 0


def test_dpo_by_hand():
    # log-ratios: chosen (0.5 + 0 - 1) = -0.5, rejected (1 - 1) = 0 (padding excluded)
    out = get_loss("dpo")(pair(), beta=0.1)
    assert out.losses.item() == pytest.approx(-logsig(0.1 * (-0.5 - 0.0)), abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(-0.05)
    smooth = get_loss("dpo")(pair(), beta=0.1, label_smoothing=0.2)
    z = 0.1 * -0.5
    assert smooth.losses.item() == pytest.approx(-0.8 * logsig(z) - 0.2 * logsig(-z), abs=1e-6)


def test_ipo_by_hand():
    out = get_loss("ipo")(pair(), beta=0.25)
    assert out.losses.item() == pytest.approx((-0.5 - 0.0 - 2.0) ** 2, abs=1e-6)


def test_simpo_by_hand():
    out = get_loss("simpo")(pair(), beta=2.0, margin=1.0)
    u_w, u_l = 2.0 * (-6.0 / 3), 2.0 * (-5.0 / 2)
    assert out.losses.item() == pytest.approx(-logsig(u_w - u_l - 1.0), abs=1e-6)


def test_rrhf_by_hand():
    out = get_loss("rrhf")(pair(), sft_weight=0.5)
    p_w, p_l = -2.0, -2.5
    assert out.losses.item() == pytest.approx(max(0.0, p_l - p_w) - 0.5 * p_w, abs=1e-6)
    p = pair()
    p.policy_rejected = torch.tensor([[-0.5, -0.5, 0.0]])
    assert get_loss("rrhf")(p, sft_weight=0.0).losses.item() == pytest.approx(-0.5 - (-2.0))


def test_selective_dpo_by_hand():
    # chosen scores ref - policy = [-0.5, 0, 1]; 0.6-quantile = 0.2 -> token 2 only: log-ratio -1
    # rejected scores policy - ref = [1, -1]; 0.6-quantile = 0.2 -> token 0 only: log-ratio 1
    out = get_loss("selective_dpo")(pair(), beta=0.5, k=0.4)
    assert out.chosen_used.tolist() == [[False, False, True]] and out.rejected_used.tolist() == [[True, False, False]]
    assert out.losses.item() == pytest.approx(-logsig(0.5 * (-1.0 - 1.0)), abs=1e-6)


def test_confpo_by_hand():
    # chosen probs e^-1, e^-2, e^-3: mean 0.1827 -> tokens 1 and 2 (mean log-prob -2.5)
    # rejected probs e^-1, e^-4: mean 0.193 -> token 1 (log-prob -4)
    out = get_loss("confpo")(pair(), beta=1.0, margin=0.0)
    assert out.chosen_used.tolist() == [[False, True, True]]
    assert out.losses.item() == pytest.approx(-logsig(-2.5 - (-4.0)), abs=1e-6)


def test_confpo_all_equal_probabilities_select_nothing():
    p = pair()
    p.policy_chosen = torch.full((1, 3), -1.0)
    out = get_loss("confpo")(p, beta=1.0, margin=0.0)
    assert out.chosen_used.sum() == 0 and out.chosen_rewards.item() == 0.0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_finite_and_differentiable_with_empty_masks(name):
    p = pair()
    for field in ("chosen_mask", "rejected_mask", "chosen_selected", "rejected_selected"):
        setattr(p, field, torch.zeros_like(getattr(p, field)))
    p.policy_chosen.requires_grad_(True)
    out = LOSSES[name](p)
    assert torch.isfinite(out.losses).all()
    out.losses.sum().backward()
    # nothing to compare: every log-ratio / mean is 0, so each loss sits at its value for equal inputs
    expected = {"sepo": math.log(2), "dpo": math.log(2), "selective_dpo": math.log(2), "ipo": (1 / (2 * 0.1)) ** 2,
                "simpo": -logsig(-1.0), "confpo": -logsig(-1.0), "rrhf": 0.0}[name]
    assert out.losses.item() == pytest.approx(expected, abs=1e-6)
    assert out.chosen_rewards.item() == 0 and out.rejected_rewards.item() == 0


def test_bad_calls_are_named():
    with pytest.raises(ConfigError, match="loss 'sepo' takes"):
        get_loss("sepo")(pair(), beta=0.1)
    p = pair()
    p.ref_chosen = None
    with pytest.raises(ConfigError, match="needs reference"):
        get_loss("dpo")(p)
    p = pair()
    p.chosen_selected = None
    with pytest.raises(ConfigError, match="needs offline token selections"):
        get_loss("sepo")(p)
    with pytest.raises(ConfigError, match="unknown loss 'kto'"):
        get_loss("kto")
