"""PPO's maths, each piece small enough to check against hand-computed numbers.

Batch-shaped functions take (B, T) tensors and a (B, T) mask of answer tokens (answers start
at t = 0 and are contiguous); the clipped losses take flat (n,) tensors of answer tokens only,
which is what the training forward pass produces.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from rlaif_code.ppo.config import PPOConfig


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def _this_process(total: torch.Tensor) -> torch.Tensor:
    return total


def masked_whiten(values: torch.Tensor, mask: torch.Tensor,
                  total: Callable[[torch.Tensor], torch.Tensor] = _this_process) -> torch.Tensor:
    """Zero mean, unit variance over the masked entries; zero elsewhere.

    `total` sums a scalar over the processes of a data-parallel run (e.g. `accelerator.reduce`), so
    that every process whitens with the statistics of the whole batch, as one process would.
    """
    mask_f = mask.to(values.dtype)
    count = total(mask_f.sum()).clamp(min=1)
    mean = total((values * mask_f).sum()) / count
    var = total(((values - mean) ** 2 * mask_f).sum()) / count
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened * mask_f


def kl_penalized_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, scores: torch.Tensor,
                         mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards (B, T): -kl_coef * (logp - ref_logp), plus the score on the last answer token.

    Returns (rewards, kl); both are zero past each answer's end.
    """
    mask_f = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask_f  # (B, T)
    rewards = -kl_coef * kl
    last = mask.long().sum(1) - 1  # (B,)
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += scores
    return rewards, kl


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || reference) estimates that cannot go negative (B, T): with r = p_ref / p
    at the sampled token, (r - 1) - log r (Schulman's k3: unbiased like logp - ref_logp, and >= 0).

    The reward keeps logp - ref_logp (its gradient is the KL's); this is what is logged and what the
    KL budget and the adaptive controller read, so a curve dipping below zero no longer hides drift.
    """
    log_ratio = (ref_logprobs - logprobs) * mask.to(logprobs.dtype)  # (B, T)
    return (torch.expm1(log_ratio) - log_ratio) * mask.to(logprobs.dtype)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over answer tokens -> (advantages, returns), each (B, T).

    The state after an answer's last token is terminal (its value is 0), and padding past
    the end carries no reward, value or advantage.
    """
    mask_f = mask.to(values.dtype)
    rewards, values = rewards * mask_f, values * mask_f
    batch, length = rewards.shape
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros(batch, dtype=values.dtype, device=values.device)
    for t in reversed(range(length)):
        next_values = values[:, t + 1] if t + 1 < length else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last_gae = (delta + gamma * lam * last_gae) * mask_f[:, t]
        advantages[:, t] = last_gae
    returns = (advantages + values) * mask_f
    return advantages, returns


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        clip_range: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate over (n,) answer tokens (a loss to minimise), with clip fraction and
    approx-KL (k3)."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg_losses = -advantages * ratio
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = torch.max(pg_losses, pg_losses_clipped).mean()
    with torch.no_grad():
        stats = {"clip_fraction": (pg_losses_clipped > pg_losses).float().mean(),
                 "approx_kl": ((ratio - 1.0) - log_ratio).mean()}
    return loss, stats


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip_range_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * max((v - R)^2, (clip(v, v_old +- c) - R)^2), the mean over (n,) answer tokens; and the
    value clip fraction."""
    clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    losses = (values - returns) ** 2
    losses_clipped = (clipped - returns) ** 2
    loss = 0.5 * torch.max(losses, losses_clipped).mean()
    with torch.no_grad():
        clip_fraction = (losses_clipped > losses).float().mean()
    return loss, clip_fraction


def anchor_nll(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The supervised anchor: the mean NLL of reference-answer tokens, logits (n, V) x tokens (n,) -> ().

    At temperature 1, unlike the PPO terms: it is the SFT loss itself, continued."""
    return -token_logprobs(logits, tokens).mean()


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    return float("nan") if var_returns.item() == 0 else float(1 - var_residual / var_returns)


class FixedKLController:
    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Ziegler et al. (2019): move the coefficient so the KL tracks `target`, by at most
    a factor e^(+-0.2) per `horizon` episodes."""

    def __init__(self, kl_coef: float, target: float, horizon: int) -> None:
        self.value = kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


def make_kl_controller(cfg: PPOConfig) -> FixedKLController | AdaptiveKLController:
    if cfg.kl_mode == "adaptive":
        return AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
    return FixedKLController(cfg.kl_coef)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] at each position, (..., V) x (...) -> (...), without a log-softmax copy."""
    logits = logits.float()
    picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    return torch.logsumexp(logits, -1) - (F.softmax(logits, -1) * logits).sum(-1)
