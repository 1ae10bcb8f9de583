"""On-policy RL (train.objective=rl): advantages, the KL term and the loss by hand and against
TRL's GRPO loss, and the tree's credit for backspace decisions."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from workers.grpo import erase_credits, group_advantages, k3, policy_loss

BKSP = "<|bksp|>"

# --- advantages, KL, loss ------------------------------------------------------------------


def test_group_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 0.0, 0.0]])
    got = group_advantages(rewards)
    # group 0: mean 0.5, Bessel std sqrt(4 * 0.25 / 3); group 2: mean 0.25, std sqrt(0.75 / 3)
    s0, s2 = math.sqrt(1 / 3), 0.5
    expected = [
        [0.5 / (s0 + 1e-4), -0.5 / (s0 + 1e-4), -0.5 / (s0 + 1e-4), 0.5 / (s0 + 1e-4)],
        [0.0, 0.0, 0.0, 0.0],  # all equal: nothing to learn from this group
        [0.75 / (s2 + 1e-4), -0.25 / (s2 + 1e-4), -0.25 / (s2 + 1e-4), -0.25 / (s2 + 1e-4)],
    ]
    assert got.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]
    # a token cost separates otherwise equal streams: the shorter one is ahead
    costed = group_advantages(torch.tensor([[1.0 - 0.01 * 10, 1.0 - 0.01 * 20]]))
    assert costed[0, 0] > 0 > costed[0, 1]


def test_k3_by_hand():
    half, quarter = torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))
    assert k3(half, quarter).item() == pytest.approx(0.5 + math.log(2) - 1)
    assert k3(quarter, half).item() == pytest.approx(2 - math.log(2) - 1)
    assert k3(half, half).item() == 0.0


def test_policy_loss_by_hand_and_masked_targets_carry_nothing():
    # row 0: a prompt target, then two generated ones; row 1: one generated, then padding
    logp = torch.log(torch.tensor([[0.9, 0.5, 0.25], [0.5, 0.3, 0.3]])).requires_grad_()
    ref = torch.log(torch.tensor([[0.1, 0.25, 0.25], [0.5, 0.9, 0.9]]))
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    adv = torch.tensor([1.5, -2.0])
    beta = 0.1
    loss, figures = policy_loss(logp, ref, adv, mask, beta)
    kl = [0.5 + math.log(2) - 1, 0.0, 0.0]  # the three loss-bearing targets
    expected = (-1.5 + beta * kl[0] - 1.5 + beta * kl[1] + 2.0 + beta * kl[2]) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert figures["kl"] == pytest.approx(sum(kl) / 3, rel=1e-6)
    loss.backward()
    # d/dlogp of (-A·ratio + β·k3) = -A + β(1 - exp(ref - logp)), over the 3 targets
    grad = logp.grad
    assert grad[0, 1].item() == pytest.approx((-1.5 + beta * (1 - 0.5)) / 3, rel=1e-5)
    assert grad[1, 0].item() == pytest.approx((2.0 + beta * (1 - 1.0)) / 3, rel=1e-5)
    assert grad[0, 0] == 0 and grad[1, 1] == 0 and grad[1, 2] == 0
    # a prompt target's or a padded target's log-probability changes nothing
    other = logp.detach().clone()
    other[0, 0], other[1, 2] = math.log(0.01), math.log(0.99)
    again, _ = policy_loss(other, ref, adv, mask, beta)
    assert again.item() == pytest.approx(loss.item(), abs=1e-7)
    # but a generated one's does
    other[0, 2] = math.log(0.01)
    assert policy_loss(other, ref, adv, mask, beta)[0].item() != pytest.approx(loss.item())


def trl_grpo_loss(logp, ref, advantages, mask, beta):
    """TRL 1.16's GRPOTrainer loss (`_compute_loss`, loss_type "dapo", its default; on-policy:
    no old log-probabilities, so the ratio is exp(logp - logp.detach())) on given per-target
    log-probabilities, through a stand-in trainer whose model returns them."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    n, width = logp.shape
    accelerator = SimpleNamespace(
        num_processes=1,
        gather=lambda x: x,
        gather_for_metrics=lambda x: x,
        reduce=lambda x, reduction: x,
    )
    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros(n, width), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type="dapo",
        epsilon_low=0.2,
        epsilon_high=0.2,
        use_vllm=False,
        model=SimpleNamespace(training=True),
        accelerator=accelerator,
        current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
    )
    inputs = {
        "prompt_ids": torch.zeros(n, 1, dtype=torch.long),
        "prompt_mask": torch.ones(n, 1, dtype=torch.long),
        "completion_ids": torch.zeros(n, width, dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": advantages,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    return GRPOTrainer._compute_loss(trainer, None, inputs)


@pytest.mark.parametrize("beta", [0.0, 0.04, 0.5])
@pytest.mark.parametrize("per_target", [False, True])
def test_policy_loss_equals_trls_grpo_loss_in_value_and_gradient(beta, per_target):
    pytest.importorskip("trl")
    gen = torch.Generator().manual_seed(0)
    shape = (6, 9)
    base = torch.log_softmax(torch.randn(6, 9, 5, generator=gen), -1)[..., 0]
    ref = torch.log_softmax(torch.randn(6, 9, 5, generator=gen), -1)[..., 0]
    mask = torch.rand(shape, generator=gen) > 0.3
    adv = torch.randn(shape if per_target else shape[:1], generator=gen)
    ours_logp, theirs_logp = base.clone().requires_grad_(), base.clone().requires_grad_()
    ours, _ = policy_loss(ours_logp, ref, adv, mask, beta)
    theirs = trl_grpo_loss(theirs_logp, ref, adv, mask, beta)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert torch.allclose(ours_logp.grad, theirs_logp.grad, atol=1e-7)
    assert ours_logp.grad.abs().sum() > 0.1  # not a case where both are trivially 0


# --- the tree's credit for backspace decisions -----------------------------------------------

D, B = 9, 8  # the step delimiter and the backspace in the hand-made streams below
PROMPT = (1, 2, D)


def test_erase_credit_is_the_value_before_the_step_minus_the_value_after_it():
    a, b, c = (3, D), (4, D), (5, D)
    values = {(*PROMPT, *a): 0.8, (*PROMPT, *a, *b): 0.1, (*PROMPT, *a, *b, *c): 0.0}
    # step unit: write a, b, erase b, write c, erase c, write 6
    stream = [*a, *b, B, *c, B, 6]
    got = erase_credits(PROMPT, stream, "step", B, D, values)
    # the second run went from a+c back to a: a+c was never probed, so no credit for it
    assert [(x.positions, x.value) for x in got] == [((4,), pytest.approx(0.8 - 0.1))]
    values[(*PROMPT, *a, *c)] = 0.5
    got = erase_credits(PROMPT, stream, "step", B, D, values)
    assert [(x.positions, x.value) for x in got] == [
        ((4,), pytest.approx(0.7)),
        ((7,), pytest.approx(0.8 - 0.5)),
    ]
    # one run erasing two steps: from a+b+c back to a
    got = erase_credits(PROMPT, [*a, *b, *c, B, B, 6], "step", B, D, values)
    assert [(x.positions, x.value) for x in got] == [((6, 7), pytest.approx(0.8))]
    # erasing the first step leaves the prompt alone, which the steps table never holds
    assert erase_credits(PROMPT, [*a, B, *b], "step", B, D, values) == []
    # a run that only cuts into a step (token unit: one backspace, the delimiter) gets none
    assert erase_credits(PROMPT, [*a, *b, B, *c], "token", B, D, values) == []
    # in token unit, two backspaces erase b (4, D) whole: credited like a step-unit erase
    got = erase_credits(PROMPT, [*a, *b, B, B, *c], "token", B, D, values)
    assert [(x.positions, x.value) for x in got] == [((4, 5), pytest.approx(0.7))]
    # a partial step erased in step unit: from a+(4,) back to a, a cut step, no credit
    assert erase_credits(PROMPT, [*a, 4, B, *c], "step", B, D, values) == []
