"""The pieces of on-policy RL (GRPO-style, `train.objective=rl`) that need no model: rewards in,
advantages and the loss out, and the tree's credit for backspace decisions.

    group_advantages(rewards)          [P, G] -> [P, G]: (r − mean) / (std + eps) per group
    k3(logp, ref)                      per target: exp(ref − logp) − (ref − logp) − 1
    policy_loss(logp, ref, adv, mask)  mean over loss-bearing targets of −A·log p + kl·k3
    erase_credits(...)                 per backspace run that erased whole finished steps:
                                       its backspaces' positions and v(P) − v(P+S)

Shapes: per-target tensors are `[N, L-1]`, target j being token j+1 of each row, as
`workers.preference.sequence_logps` returns them (the collator's labels shifted by one).

On-policy: one gradient step per batch of samples, so the ratio π/π_old is 1. The loss uses
exp(log p − log p.detach()) · A, which is A in value and A·∇log p in gradient, so it equals TRL
1.16's GRPO loss with `loss_type="dapo"` (its default: token-level mean over the batch) and
`beta` = the KL weight on the same log-probabilities (tests/pipeline/trainers/test_rl.py checks
value and gradient); no clipping ever applies at ratio 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from search.backspace import Delim, Unit, is_step_end, pop_count

EPS = 1e-4  # TRL's GRPO epsilon in the advantage's denominator


def group_advantages(rewards: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Advantages `[P, G]` of rewards `[P, G]` (P groups of G samples of one problem each): the
    reward minus its group's mean over the group's standard deviation (Bessel-corrected, as
    TRL's `nanstd`) plus `eps`. A group whose rewards are all equal gets 0 everywhere."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=True)
    return (rewards - mean) / (std + eps)


def k3(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The k3 estimate of KL(π‖π_ref) at each sampled token (Schulman's; GRPO's, TRL's):
    exp(ref − logp) − (ref − logp) − 1, never negative, 0 where the two agree."""
    delta = ref - logp
    return torch.exp(delta) - delta - 1


def policy_loss(
    logp: torch.Tensor,
    ref: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    kl_weight: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one on-policy batch and its mean KL (k3) per loss-bearing target.

    `logp` `[N, T]`: the policy's log-probability of each target, with gradients; `ref` the
    frozen reference's; `advantages` `[N, T]` (or `[N]`, the same for every target of a row);
    `mask` `[N, T]`: 1 on targets that carry loss (generated tokens), 0 on the prompt and on
    padding. Masked targets add nothing, whatever their values (their gradient is 0)."""
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - logp.detach())  # 1 on-policy; keeps the gradient of log p
    kl = k3(logp, ref)
    per_target = -ratio * advantages + kl_weight * kl
    n = mask.sum().clamp(min=1)
    loss = (per_target * mask).sum() / n
    return loss, {"kl": ((kl * mask).sum() / n).item()}


@dataclass(frozen=True)
class Credit:
    """One backspace run's tree credit: the stream positions of its backspaces (0 = the first
    generated token) and v(prefix after the erase) − v(prefix before it)."""

    positions: tuple[int, ...]
    value: float


def erase_credits(
    prompt: Sequence[int],
    generated: Sequence[int],
    unit: Unit,
    bksp_id: int,
    delim_id: Delim,
    values: Mapping[tuple[int, ...], float],
) -> list[Credit]:
    """The credit of each backspace run of `generated` (the raw stream after `prompt`) that erased
    whole finished steps: the visible stream ended with a step delimiter when the run started and
    ends with one (or is empty) when it stops, so it went from prefix P+S back to P. Its value is
    values[P] − values[P+S], keyed by the full visible token ids (prompt included), as the
    `steps` table's prefix_ids + step_ids; a run where either is missing, or that cut into a
    step, gets no credit."""
    visible: list[int] = []
    out: list[Credit] = []
    run: list[int] = []
    before: tuple[int, ...] = ()

    def close() -> None:
        whole = (not before or is_step_end(before[-1], delim_id)) and (
            not visible or is_step_end(visible[-1], delim_id)
        )
        if not (before and whole):
            return  # a cut step, or back to the prompt alone: no credit, nothing looked up
        v_before = values.get((*prompt, *visible))
        v_after = values.get((*prompt, *before))
        if v_before is not None and v_after is not None:
            out.append(Credit(tuple(run), v_before - v_after))

    for i, tok in enumerate(generated):
        if tok == bksp_id:
            if not run:
                before = tuple(visible)
            run.append(i)
            del visible[len(visible) - pop_count(visible, 0, unit, delim_id) :]
            continue
        if run:
            close()
            run = []
        visible.append(tok)
    if run:
        close()
    return out
