"""Preference losses: pure functions of per-token log-probs and masks, in a registry.

Every loss takes a :class:`PairLogps` — per-token log-prob tensors (B, L) of the policy (and,
where the loss needs one, of a reference model) for chosen and rejected responses, plus bool
masks (B, L) — and keyword hyper-parameters, and returns a :class:`LossOutput` of per-example
losses and the implicit rewards the loss compares. No model, tokenizer or device move happens
here; the trainer computes log-probs with :func:`sepo.logprobs.token_logps` and calls
``LOSSES[name](inputs, **hyperparameters)``.

Masks: ``chosen_mask`` / ``rejected_mask`` mark response tokens; ``chosen_selected`` /
``rejected_selected`` mark the tokens chosen offline (SePO). Losses that select online
(Selective-DPO, ConfPO) build their own selection from the log-probs, detached.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F

from sepo import selectors
from sepo.errors import ConfigError


@dataclasses.dataclass
class PairLogps:
    """Per-token log-probs (B, L) and bool masks (B, L) of a batch of preference pairs."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    chosen_mask: torch.Tensor
    rejected_mask: torch.Tensor
    chosen_selected: torch.Tensor | None = None
    rejected_selected: torch.Tensor | None = None
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None


@dataclasses.dataclass
class LossOutput:
    """Per-example losses (B,) and the rewards the loss compares (B,), with the masks it used."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    chosen_used: torch.Tensor | None = None
    rejected_used: torch.Tensor | None = None

    def metrics(self) -> dict[str, float]:
        margins = (self.chosen_rewards - self.rejected_rewards).detach()
        out = {
            "loss": float(self.losses.detach().mean()),
            "rewards/chosen": float(self.chosen_rewards.detach().mean()),
            "rewards/rejected": float(self.rejected_rewards.detach().mean()),
            "rewards/margins": float(margins.mean()),
            "rewards/accuracies": float((margins > 0).float().mean()),
        }
        if self.chosen_used is not None and self.rejected_used is not None:
            out["tokens/chosen_used"] = float(self.chosen_used.sum(-1).float().mean())
            out["tokens/rejected_used"] = float(self.rejected_used.sum(-1).float().mean())
        return out


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A registered loss: the function and what it needs from the trainer."""

    name: str
    fn: Callable[..., LossOutput]
    needs_reference: bool
    needs_selection: bool
    doc: str
    label: str  # the method's name in tables (e.g. "DPO")

    @property
    def hyperparameters(self) -> dict[str, object]:
        params = list(inspect.signature(self.fn).parameters.values())[1:]
        return {p.name: p.default for p in params}

    def __call__(self, inputs: PairLogps, **hyperparameters) -> LossOutput:
        unknown = sorted(set(hyperparameters) - set(self.hyperparameters))
        if unknown:
            raise ConfigError(f"loss {self.name!r} takes {sorted(self.hyperparameters)}, not {unknown}")
        if self.needs_reference and (inputs.ref_chosen is None or inputs.ref_rejected is None):
            raise ConfigError(f"loss {self.name!r} needs reference log-probs")
        if self.needs_selection and (inputs.chosen_selected is None or inputs.rejected_selected is None):
            raise ConfigError(f"loss {self.name!r} needs offline token selections (chosen_selected / rejected_selected)")
        return self.fn(inputs, **hyperparameters)


LOSSES: dict[str, LossSpec] = {}


def register(name: str, *, needs_reference: bool, needs_selection: bool = False, label: str | None = None):
    """Register a loss under ``name``. ``needs_reference``: the trainer must give reference log-probs;
    ``needs_selection``: it must give offline token selections (from a registered selector);
    ``label``: the method's name in tables (default: ``name``)."""

    def wrap(fn):
        LOSSES[name] = LossSpec(name, fn, needs_reference, needs_selection, (fn.__doc__ or "").strip(), label or name)
        return fn

    return wrap


def get_loss(name: str) -> LossSpec:
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; registered: {sorted(LOSSES)}")
    return LOSSES[name]


# --------------------------------------------------------------------------------------------
# Reductions
# --------------------------------------------------------------------------------------------
def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L) -> (B,): sum over the masked tokens (0 for an empty mask)."""
    return (values * mask).sum(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L) -> (B,): mean over the masked tokens; an empty mask gives 0 (no gradient)."""
    return masked_sum(values, mask) / mask.sum(-1).clamp(min=1)


def _logratios(inp: PairLogps, chosen_mask: torch.Tensor, rejected_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed policy-minus-reference log-ratios of chosen and rejected over the given masks."""
    return (
        masked_sum(inp.policy_chosen - inp.ref_chosen, chosen_mask),
        masked_sum(inp.policy_rejected - inp.ref_rejected, rejected_mask),
    )


def _sigmoid_loss(logits: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return -F.logsigmoid(logits) * (1 - label_smoothing) - F.logsigmoid(-logits) * label_smoothing


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------
@register("sepo", needs_reference=False, needs_selection=True, label="SePO")
def sepo_loss(inp: PairLogps, gamma: float = 1.0, margin: float = 0.0) -> LossOutput:
    """SePO: ``-log sigmoid(u_w - u_l - margin)``, ``u = gamma * mean log-prob over selected tokens``.

    Reference-free. A response whose selection is empty has ``u = 0``.
    """
    cw, rl = inp.chosen_selected & inp.chosen_mask, inp.rejected_selected & inp.rejected_mask
    u_w = gamma * masked_mean(inp.policy_chosen, cw)
    u_l = gamma * masked_mean(inp.policy_rejected, rl)
    return LossOutput(-F.logsigmoid(u_w - u_l - margin), u_w, u_l, cw, rl)


@register("dpo", needs_reference=True, label="DPO")
def dpo_loss(inp: PairLogps, beta: float = 0.1, label_smoothing: float = 0.0) -> LossOutput:
    """DPO: ``-log sigmoid(beta * [logratio(y_w) - logratio(y_l)])``, log-ratios summed over response tokens."""
    lw, ll = _logratios(inp, inp.chosen_mask, inp.rejected_mask)
    return LossOutput(_sigmoid_loss(beta * (lw - ll), label_smoothing), beta * lw, beta * ll, inp.chosen_mask, inp.rejected_mask)


@register("ipo", needs_reference=True, label="IPO")
def ipo_loss(inp: PairLogps, beta: float = 0.1) -> LossOutput:
    """IPO: ``((logratio(y_w) - logratio(y_l)) - 1 / (2 beta))^2``, log-ratios summed over response tokens."""
    lw, ll = _logratios(inp, inp.chosen_mask, inp.rejected_mask)
    return LossOutput(((lw - ll) - 1.0 / (2.0 * beta)) ** 2, beta * lw, beta * ll, inp.chosen_mask, inp.rejected_mask)


@register("simpo", needs_reference=False, label="SimPO")
def simpo_loss(inp: PairLogps, beta: float = 2.0, margin: float = 1.0) -> LossOutput:
    """SimPO: ``-log sigmoid(beta/|y_w| logp(y_w) - beta/|y_l| logp(y_l) - margin)`` (``margin`` is SimPO's gamma)."""
    u_w = beta * masked_mean(inp.policy_chosen, inp.chosen_mask)
    u_l = beta * masked_mean(inp.policy_rejected, inp.rejected_mask)
    return LossOutput(-F.logsigmoid(u_w - u_l - margin), u_w, u_l, inp.chosen_mask, inp.rejected_mask)


@register("rrhf", needs_reference=False, label="RRHF")
def rrhf_loss(inp: PairLogps, sft_weight: float = 1.0) -> LossOutput:
    """RRHF: ranking hinge ``max(0, p_l - p_w)`` on length-normalised log-probs, plus ``sft_weight`` times
    the chosen response's mean negative log-likelihood."""
    p_w = masked_mean(inp.policy_chosen, inp.chosen_mask)
    p_l = masked_mean(inp.policy_rejected, inp.rejected_mask)
    return LossOutput(F.relu(p_l - p_w) - sft_weight * p_w, p_w, p_l, inp.chosen_mask, inp.rejected_mask)


@register("selective_dpo", needs_reference=True, label="Selective-DPO")
def selective_dpo_loss(inp: PairLogps, beta: float = 0.01, k: float = 0.4, label_smoothing: float = 0.0) -> LossOutput:
    """Selective-DPO: DPO on the fraction ``k`` of each response's tokens with the highest online score
    (those at or above the ``1 - k`` quantile of their response; the paper keeps the top 40%).

    Scores (detached): chosen ``logp_ref - logp_policy``, rejected ``logp_policy - logp_ref``.
    """
    selectors.check_fraction(k, "k")
    cw = selectors.quantile_select(selectors.selective_dpo_scores(inp.policy_chosen, inp.ref_chosen, True), inp.chosen_mask, 1 - k)
    rl = selectors.quantile_select(selectors.selective_dpo_scores(inp.policy_rejected, inp.ref_rejected, False), inp.rejected_mask, 1 - k)
    lw, ll = _logratios(inp, cw, rl)
    return LossOutput(_sigmoid_loss(beta * (lw - ll), label_smoothing), beta * lw, beta * ll, cw, rl)


@register("confpo", needs_reference=False, label="ConfPO")
def confpo_loss(inp: PairLogps, beta: float = 2.0, margin: float = 1.0) -> LossOutput:
    """ConfPO: SimPO over the tokens whose policy probability is below their response's mean probability."""
    cw = selectors.confpo_select(inp.policy_chosen, inp.chosen_mask)
    rl = selectors.confpo_select(inp.policy_rejected, inp.rejected_mask)
    u_w = beta * masked_mean(inp.policy_chosen, cw)
    u_l = beta * masked_mean(inp.policy_rejected, rl)
    return LossOutput(-F.logsigmoid(u_w - u_l - margin), u_w, u_l, cw, rl)
