"""PPO's maths against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from rlaif_code.ppo.losses import (
    AdaptiveKLController,
    FixedKLController,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    kl_k3,
    kl_penalized_rewards,
    masked_mean,
    masked_whiten,
)


def test_gae_matches_hand_computed_values_with_padding():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.5, 1.0, 7.0]])
    values = torch.tensor([[0.5, 0.2, 0.1], [1.0, 0.3, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)  # row 2 ends after 2 tokens
    gamma, lam = 0.9, 0.8
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    # row 1: deltas 2 - 0.1 = 1.9; 0 + 0.9*0.1 - 0.2 = -0.11; 1 + 0.9*0.2 - 0.5 = 0.68
    a12 = 1.9
    a11 = -0.11 + gamma * lam * a12
    a10 = 0.68 + gamma * lam * a11
    # row 2: the state after token 2 is terminal (value 0); the padded reward 7 and value 9 count for nothing
    a21 = 1.0 + gamma * 0.0 - 0.3
    a20 = 0.5 + gamma * 0.3 - 1.0 + gamma * lam * a21
    expected = torch.tensor([[a10, a11, a12], [a20, a21, 0.0]])
    assert torch.allclose(advantages, expected, atol=1e-6)
    assert torch.allclose(returns, (expected + values) * mask, atol=1e-6)
    assert returns[1, 2] == 0.0


def test_gae_with_gamma_and_lambda_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.1, -0.2, 3.0, 0.0]])
    values = torch.tensor([[0.4, 0.3, 0.2, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(returns, torch.tensor([[2.9, 2.8, 3.0, 0.0]]), atol=1e-6)
    assert torch.allclose(advantages, torch.tensor([[2.5, 2.5, 2.8, 0.0]]), atol=1e-6)


def test_clipped_policy_loss_matches_hand_computed():
    new = torch.tensor([[-1.0, -0.5, -3.0]])
    old = torch.tensor([[-1.2, -0.4, -0.1]])
    adv = torch.tensor([[1.0, -2.0, 5.0]])
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)  # the third token is padding
    # the losses take answer tokens only, flat: what the training pass produces
    loss, stats = clipped_policy_loss(new[mask], old[mask], adv[mask], clip_range=0.2)
    r0, r1 = math.exp(0.2), math.exp(-0.1)  # 1.2214 (clipped to 1.2), 0.9048 (inside the range)
    token0 = max(-1.0 * r0, -1.0 * 1.2)  # = -1.2: the clipped term is the pessimistic one
    token1 = max(2.0 * r1, 2.0 * r1)
    assert loss.item() == pytest.approx((token0 + token1) / 2, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)
    approx_kl = ((r0 - 1) - 0.2 + (r1 - 1) + 0.1) / 2
    assert stats["approx_kl"].item() == pytest.approx(approx_kl, abs=1e-6)


def test_clipped_policy_loss_gradient_vanishes_once_clipped():
    new = torch.tensor([math.log(1.5)], requires_grad=True)
    loss, _ = clipped_policy_loss(new, torch.zeros(1), torch.ones(1), 0.2)
    loss.backward()
    assert new.grad.item() == 0.0


def test_clipped_value_loss_matches_hand_computed():
    values = torch.tensor([[1.0, 0.0, 2.0]])
    old = torch.tensor([[0.5, 0.1, 0.0]])
    returns = torch.tensor([[0.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    loss, clip_fraction = clipped_value_loss(values[mask], old[mask], returns[mask], clip_range_value=0.2)
    # token 0: unclipped (1-0)^2 = 1, clipped 0.5+0.2 = 0.7 -> 0.49; the max keeps 1
    # token 1: v - old = -0.1 is inside the range, both terms (0-1)^2 = 1; token 2 is padding
    assert loss.item() == pytest.approx(0.5 * (1.0 + 1.0) / 2)
    assert clip_fraction.item() == 0.0
    loss, clip_fraction = clipped_value_loss(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([2.0]), 0.2)
    # unclipped (0-2)^2 = 4; clipped 0.8 -> (0.8-2)^2 = 1.44; the max keeps 4
    assert loss.item() == pytest.approx(0.5 * 4.0)
    assert clip_fraction.item() == 0.0
    loss, clip_fraction = clipped_value_loss(torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([0.0]), 0.2)
    # unclipped 9, clipped 1.2 -> 1.44; the max keeps 9
    assert loss.item() == pytest.approx(4.5)
    loss, clip_fraction = clipped_value_loss(torch.tensor([1.5]), torch.tensor([1.0]), torch.tensor([3.0]), 0.2)
    # unclipped (1.5-3)^2 = 2.25; clipped 1.2 -> 3.24: the clipped loss dominates
    assert loss.item() == pytest.approx(0.5 * 3.24)
    assert clip_fraction.item() == 1.0


def test_kl_penalty_per_token_with_score_on_last_answer_token():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -9.0, -9.0]])
    ref_logprobs = torch.tensor([[-1.5, -1.0, -0.5], [-0.1, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = kl_penalized_rewards(logprobs, ref_logprobs, scores, mask, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0], [-0.2, 0.0, 0.0]]))
    expected = torch.tensor([[-0.05, 0.1, 0.0 + 2.0], [0.02 - 1.0, 0.0, 0.0]])
    assert torch.allclose(rewards, expected, atol=1e-6)


def test_adaptive_kl_controller_follows_ziegler_et_al():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=9.0, n_steps=256)  # error 0.5, clipped to 0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 256 / 10000))
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=6.6, n_steps=100)  # error 0.1: inside the clip
    assert ctl.value == pytest.approx(0.1 * (1 + 0.1 * 100 / 10000))
    ctl.update(current_kl=0.0, n_steps=10000)  # error -1, clipped to -0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.1 * 100 / 10000) * 0.8)
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 10)
    assert fixed.value == 0.05


def test_masked_whiten_ignores_padding():
    values = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    out = masked_whiten(values, mask)
    assert torch.allclose(out, torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-4)


def test_masked_mean_and_explained_variance_ignore_padding():
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    assert masked_mean(torch.tensor([[1.0, 3.0, 100.0]]), mask).item() == 2.0
    returns = torch.tensor([[1.0, 3.0, 50.0]])
    # values off by a constant: the residual has no variance, all of the returns' is explained
    assert explained_variance(returns - 0.5, returns, mask) == pytest.approx(1.0)
    assert math.isnan(explained_variance(returns, torch.tensor([[2.0, 2.0, 9.0]]), mask))  # returns constant


def _whiten_half(rank: int, port: int, values: torch.Tensor, mask: torch.Tensor, out: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)

    def total(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    rows = slice(0, 2) if rank == 0 else slice(2, 4)
    out[rank] = masked_whiten(values[rows], mask[rows], total)
    dist.destroy_process_group()


def test_whitening_over_two_processes_equals_whitening_the_whole_batch() -> None:
    # Data parallel: each process holds half the rows; summing the statistics over processes
    # gives every process the whole batch's mean and variance.
    import socket

    import torch.multiprocessing as mp

    torch.manual_seed(0)
    values = torch.randn(4, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_whiten_half, args=(port, values, mask, out), nprocs=2, join=True)
    whole = masked_whiten(values, mask)
    assert torch.allclose(torch.cat([out[0], out[1]]), whole, atol=1e-6)
    assert not torch.allclose(masked_whiten(values[:2], mask[:2]), whole[:2], atol=1e-3)  # local stats differ


def test_kl_k3_is_never_negative_and_agrees_with_the_exact_kl_in_expectation() -> None:
    torch.manual_seed(0)
    logits_p, logits_ref = torch.randn(5), torch.randn(5)
    p, ref = torch.softmax(logits_p, 0), torch.softmax(logits_ref, 0)
    exact = float((p * (p.log() - ref.log())).sum())
    tokens = torch.multinomial(p, 200_000, replacement=True)  # samples from the policy, as rollouts are
    logprobs, ref_logprobs = p.log()[tokens][None, :], ref.log()[tokens][None, :]
    mask = torch.ones_like(logprobs, dtype=torch.bool)
    k3 = kl_k3(logprobs, ref_logprobs, mask)
    assert (k3 >= 0).all()
    assert float(k3.mean()) == pytest.approx(exact, rel=0.02)
    assert float((logprobs - ref_logprobs).min()) < 0  # the plain estimator dips below zero per token
    assert (kl_k3(logprobs, ref_logprobs, torch.zeros_like(mask)) == 0).all()  # padding carries nothing


def test_anchor_nll_is_the_mean_token_nll_at_temperature_one() -> None:
    from rlaif_code.ppo.losses import anchor_nll

    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p(token 0) = 1/2, then 3/4
    tokens = torch.tensor([0, 0])
    assert anchor_nll(logits, tokens).item() == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2)
