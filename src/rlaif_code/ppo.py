"""PPO against the reward model: M_SFT -> M_RL, the last training stage of RLAIF.

One readable loop in `run(cfg)`, written the way CleanRL writes PPO: batch tensors
are `b_*`, minibatch tensors `mb_*`, shapes in comments; the maths (GAE, the clipped
losses, the KL penalty, the KL controller) are small functions tested on their own.

Per step: sample prompts -> generate answers (left-padded prompts, KV cache, stop at
an end token or a new "###Instruction", `rlaif_code.models.stop_strings`) -> score = the reward model's logit on
prompt + answer (or `reward_fn`) -> per-token reward = -kl_coef * (logp - ref_logp),
plus the score on the answer's last token -> values -> GAE -> `ppo_epochs` over
shuffled minibatches of the clipped surrogate + clipped value loss -> KL controller.

Memory: the value function is by default a scalar head on the policy's own last hidden
state (no second network, no second optimizer state); the reference policy is either a
frozen copy or, with LoRA, the same network with its adapters disabled; reference and
reward model run without gradients (bf16 on GPU); logits are computed only for answer
tokens.

Speed: the sampler's own logits and hidden states give the old log-probs, entropies and
(shared-head) values, so a rollout needs no second policy pass (`rollout_logprobs:
recompute` adds one for bit-exact old log-probs). PPO batches are ragged (answers end at
different lengths): decoding drops each row from the batch and the KV cache as it ends,
and forward passes pack the sequences end to end without padding (block-diagonal
attention through restarting position ids; checked once per model, padded rows otherwise).

Tokenizers: the reward model always reads text. Answers are decoded and scored as
`prompt + answer` through `rlaif_code.reward.score_texts` with the reward model's own
tokenizer (as in reward training), so a reward model whose tokenizer differs from the
policy's works unchanged: the answer is re-tokenized (and the run says so).

Outputs (in `out_dir`): `metrics.jsonl` (one row per step), `tb/` (TensorBoard),
`checkpoints/step-NNNNNN/` (trainable weights, optimizer, RNG, KL coefficient, step,
config; each appears atomically), `model/` (the final policy as a plain Hugging Face
model, LoRA merged, with its tokenizer and a stage.json carrying the config), and
`stage.json`. A killed run restarts from its latest checkpoint.

Data parallel: under `accelerate launch` every process samples `batch_size` rollouts
per step from its own share of the prompts; gradients are averaged by Accelerate.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rlaif_code.artifacts import (
    InputError,
    JsonlAppender,
    atomic_write_json,
    atomic_write_jsonl,
    iter_jsonl,
    read_jsonl,
    read_stage_record,
    stage_is_done,
    write_stage_record,
)
from rlaif_code.config import ConfigError, to_dict
from rlaif_code.models import LoraSettings

RewardFn = Callable[[list[str], list[str]], "torch.Tensor"]


# ---------------------------------------------------------------- config


@dataclass
class PPOLoraSettings(LoraSettings):
    # Non-zero dropout makes the PPO ratio noisy (the rollout pass and the training pass
    # see different masks); every other dropout in the models is switched off.
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclass
class PPOConfig:
    policy: str = "runs/default/sft"  # M_SFT: a model directory (or any name models.resolve_model takes)
    reward_model: str = "runs/default/reward"  # M_reward: the reward stage's output (num_labels=1)
    data_dir: str = "runs/default/data"  # a data stage output; its train.jsonl prompts are the PPO prompts
    prompts_file: str | None = None  # or a JSONL with a "prompt" field per line (overrides data_dir)
    out_dir: str = "runs/default/ppo"
    total_steps: int = 200  # PPO iterations
    batch_size: int = 16  # rollouts per step (per process)
    mini_batch_size: int = 8  # rollouts per optimizer step
    grad_accum: int = 1  # micro-batches per minibatch (micro-batch = mini_batch_size / grad_accum)
    ppo_epochs: int = 4
    learning_rate: float = 1e-5
    max_new_tokens: int = 128
    max_prompt_tokens: int = 512  # longer prompts are left out (and counted)
    temperature: float = 1.0
    # < 1 samples from a truncated distribution while the loss uses the full one; keep 1.0
    # unless you know you want that bias.
    top_p: float = 1.0
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1
    kl_coef: float = 0.05  # the starting coefficient when kl_mode is adaptive
    kl_mode: Literal["fixed", "adaptive"] = "fixed"
    kl_target: float = 6.0  # adaptive: target KL (nats per answer), Ziegler et al. 2019
    kl_horizon: int = 10000  # adaptive: episodes over which the coefficient may change by e^(+-0.2)
    whiten_rewards: bool = False  # standardise the scores over the (per-process) batch, before the penalties
    whiten_advantages: bool = True
    max_grad_norm: float = 1.0
    # Subtracted from the score of an answer that hit max_new_tokens without reaching an
    # end token or stop string; None disables.
    missing_eos_penalty: float | None = None
    # Subtracted from the score of an answer that lacks one of Gorilla's five fields (domain,
    # api_call, provider, explanation, code). The reward model only saw complete SFT answers, so
    # its score for a truncated one is an extrapolation, and PPO finds it: on the full TorchHub
    # run, answers shrank from 140 to 42 tokens of domain + api_call while the score rose. None disables.
    incomplete_answer_penalty: float | None = None
    value_head: Literal["shared", "separate"] = "shared"
    lora: PPOLoraSettings = field(default_factory=PPOLoraSettings)
    seed: int = 0
    save_every: int = 20  # steps between checkpoints (the last step is always saved)
    keep_checkpoints: int = 2
    log_every: int = 1  # steps between console / TensorBoard lines (metrics.jsonl gets every step)
    # Forward passes lay sequences end to end without padding, at most this many tokens per row
    # (0: padded rows). Architectures that ignore packed position ids fall back to padding.
    pack_tokens: int = 512
    # generation: old log-probs and (shared-head) values are those the sampler computed, with the
    # KV cache: no extra forward pass, equal to a full pass up to rounding (larger under bf16).
    # recompute: one more no-grad forward pass over prompt + answer gives them exactly.
    rollout_logprobs: Literal["generation", "recompute"] = "generation"
    bf16: bool | Literal["auto"] = "auto"  # auto: bf16 mixed precision on a GPU that supports it


def check_config(cfg: PPOConfig) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"ppo: {message}")

    for name in ("total_steps", "batch_size", "mini_batch_size", "grad_accum", "ppo_epochs", "max_new_tokens",
                 "max_prompt_tokens", "save_every", "log_every", "keep_checkpoints", "kl_horizon"):
        need(getattr(cfg, name) >= 1, f"'{name}' must be >= 1 (got {getattr(cfg, name)})")
    need(cfg.batch_size % cfg.mini_batch_size == 0,
         f"'batch_size' ({cfg.batch_size}) must be a multiple of 'mini_batch_size' ({cfg.mini_batch_size})")
    need(cfg.mini_batch_size % cfg.grad_accum == 0,
         f"'mini_batch_size' ({cfg.mini_batch_size}) must be a multiple of 'grad_accum' ({cfg.grad_accum})")
    need(cfg.pack_tokens >= 0, "'pack_tokens' must be >= 0 (0 = padded rows)")
    need(cfg.temperature > 0, "'temperature' must be > 0 (PPO needs a sampling policy)")
    need(0 < cfg.top_p <= 1, "'top_p' must be in (0, 1]")
    need(cfg.kl_coef >= 0 and cfg.kl_target > 0, "'kl_coef' must be >= 0 and 'kl_target' > 0")
    need(not (cfg.whiten_rewards and cfg.batch_size < 2), "'whiten_rewards' needs batch_size >= 2")


# ---------------------------------------------------------------- the maths


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None, dim: int | None = None) -> torch.Tensor:
    if mask is None:  # flat tensors of answer tokens only
        return values.mean() if dim is None else values.mean(dim)
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def kl_penalized_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, scores: torch.Tensor,
                         mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards (B, T): -kl_coef * (logp - ref_logp), plus the score on the last answer token.

    Returns (rewards, kl); both are zero past each answer's end. `mask` (B, T) marks answer tokens,
    which start at t = 0 and are contiguous.
    """
    mask_f = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask_f  # (B, T)
    rewards = -kl_coef * kl
    last = mask.long().sum(1) - 1  # (B,)
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += scores
    return rewards, kl


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
                        mask: torch.Tensor | None, clip_range: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (a loss to minimise), with clip fraction and approx-KL (k3)."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg_losses = -advantages * ratio
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(pg_losses, pg_losses_clipped), mask)
    with torch.no_grad():
        stats = {"clip_fraction": masked_mean((pg_losses_clipped > pg_losses).float(), mask),
                 "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask)}
    return loss, stats


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor | None, clip_range_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * max((v - R)^2, (clip(v, v_old +- c) - R)^2), masked mean; and the value clip fraction."""
    clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    losses = (values - returns) ** 2
    losses_clipped = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(losses, losses_clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((losses_clipped > losses).float(), mask)
    return loss, clip_fraction


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


# ---------------------------------------------------------------- models


def _causal_lm_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(backbone, lm_head) of a causal LM, looking through a PEFT wrapper (whose LoRA layers live inside)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix), base.get_output_embeddings()


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    # Left padding does not shift positions: the first real token is at 0, as in generate().
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class ForwardInputs:
    """A micro-batch laid out for one backbone call, and where its answer-predicting states are.

    `select` indexes the flattened (rows x columns) hidden states: entry i is the state
    just before the i-th answer token, answer tokens taken row by row (the order of
    `answer_mask.nonzero()`), so every model output is a flat (n,) or (n, V) tensor over
    real answer tokens only.
    """

    input_ids: torch.Tensor  # (R, N)
    position_ids: torch.Tensor  # (R, N)
    attention_mask: torch.Tensor | None  # (R, N); None when packed
    select: torch.Tensor  # (n,)

    def as_args(self) -> tuple[Any, ...]:
        return self.input_ids, self.position_ids, self.attention_mask, self.select


def padded_inputs(ids: torch.Tensor, attention: torch.Tensor, context_length: int,
                  answer_mask: torch.Tensor) -> ForwardInputs:
    """The rows as they are, less the columns none of them uses (shared left padding, the tail
    past the longest answer)."""
    left = int((attention[:, :context_length] == 0).all(0).long().cumprod(0).sum())
    left = min(left, context_length - 1)  # the last prompt column predicts the first answer token
    answer_width = int(answer_mask.sum(1).max())
    ids, attention = ids[:, left: context_length + answer_width], attention[:, left: context_length + answer_width]
    rows, width = ids.shape
    columns = (context_length - left - 1) + torch.arange(answer_width, device=ids.device)
    flat = torch.arange(rows, device=ids.device)[:, None] * width + columns[None, :]  # (b, t)
    return ForwardInputs(ids, position_ids_for(attention), attention, flat[answer_mask[:, :answer_width]])


def attention_cost(config: Any) -> float:
    """FLOPs of one (query, key) pair of attention relative to one token through a layer's
    weight matrices: 4 * hidden / (2 * (4 * hidden^2 + 3 * hidden * intermediate)) for a Llama block."""
    hidden = config.hidden_size
    return 2.0 / (4 * hidden + 3 * getattr(config, "intermediate_size", 4 * hidden))


def _balanced_bins(lengths: list[int], n_bins: int) -> tuple[list[list[int]], int]:
    """Longest sequence first into the emptiest row; (rows, width of the fullest row)."""
    bins: list[list[int]] = [[] for _ in range(n_bins)]
    loads = [0] * n_bins
    for row in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
        emptiest = min(range(n_bins), key=loads.__getitem__)
        bins[emptiest].append(row)
        loads[emptiest] += lengths[row]
    return bins, max(loads)


def packed_inputs(ids: torch.Tensor, attention: torch.Tensor, context_length: int, answer_mask: torch.Tensor,
                  row_tokens: int, pair_cost: float = 3e-4) -> ForwardInputs:
    """Padding-free layout: each sequence's real tokens end to end, several sequences per row.

    Positions restart at 0 for each sequence and no attention mask is passed, which
    transformers turns into a block-diagonal causal mask: each sequence sees only itself.
    PPO batches are ragged (answers end at different lengths), so this skips the padding
    a rectangular batch would compute. Every row is as wide as the fullest, and attention
    costs the square of a row's width (`pair_cost`, see `attention_cost`), so the number of
    rows is chosen to minimise rows * width * (1 + pair_cost * width), rows of at most
    `row_tokens` tokens unless one sequence is longer.
    """
    lengths = attention.sum(1).tolist()
    fewest = min(len(lengths), max(1, -(-sum(lengths) // row_tokens)))
    layouts = [_balanced_bins(lengths, n) for n in range(fewest, len(lengths) + 1)]
    bins, width = min(layouts, key=lambda layout: len(layout[0]) * layout[1] * (1 + pair_cost * layout[1]))
    device = ids.device
    # Filler past a row's last sequence sits at position 0: each filler token is a sequence of its own.
    packed_ids = torch.zeros((len(bins), width), dtype=torch.long, device=device)
    packed_positions = torch.zeros((len(bins), width), dtype=torch.long, device=device)
    flat_index = torch.zeros_like(ids)  # (b, L): where each real token went in the flattened packed rows
    for bin_index, rows in enumerate(bins):
        offset = 0
        for row in rows:
            columns = attention[row].nonzero().squeeze(1)
            n = columns.numel()
            span = torch.arange(n, device=device)
            packed_ids[bin_index, offset: offset + n] = ids[row, columns]
            packed_positions[bin_index, offset: offset + n] = span
            flat_index[row, columns] = bin_index * width + offset + span
            offset += n
    select = flat_index[:, context_length - 1: -1][answer_mask]
    return ForwardInputs(packed_ids, packed_positions, None, select)


def forward_inputs(ids: torch.Tensor, attention: torch.Tensor, context_length: int, answer_mask: torch.Tensor,
                   pack_tokens: int, pair_cost: float = 3e-4) -> ForwardInputs:
    if pack_tokens > 0:
        return packed_inputs(ids, attention, context_length, answer_mask, pack_tokens, pair_cost)
    return padded_inputs(ids, attention, context_length, answer_mask)


def answer_states(backbone: nn.Module, inputs: ForwardInputs) -> torch.Tensor:
    """Last hidden states before each answer token, (n, H)."""
    hidden = backbone(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                      position_ids=inputs.position_ids, use_cache=False).last_hidden_state
    return hidden.flatten(0, 1)[inputs.select]


def answer_logits(model: nn.Module, inputs: ForwardInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (n, V), hidden (n, H)) for each answer token: the LM head never runs on prompts or padding."""
    backbone, lm_head = _causal_lm_parts(model)
    hidden = answer_states(backbone, inputs)
    return lm_head(hidden), hidden


@torch.no_grad()
def packing_keeps_sequences_apart(model: nn.Module) -> bool:
    """Whether this architecture honours restarting position ids (checked once on two short sequences);
    if not, PPO falls back to padded rows."""
    device = next(model.parameters()).device
    ids = torch.tensor([[3, 4, 5, 6, 7], [0, 8, 9, 10, 11]], device=device) % model.config.vocab_size
    attention = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], device=device)
    answer_mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool, device=device)
    padded, _ = answer_logits(model, padded_inputs(ids, attention, 2, answer_mask))
    packed, _ = answer_logits(model, packed_inputs(ids, attention, 2, answer_mask, 64))
    return bool((padded.float() - packed.float()).abs().max() <= 1e-3 * padded.float().abs().max() + 1e-4)


class PolicyWithValue(nn.Module):
    """The policy plus its value function, one module so Accelerate prepares (and DDP syncs) both.

    shared: values = a linear head on the policy's last hidden state (the default).
    separate: values = a linear head on a second backbone (initialised from the policy).
    """

    def __init__(self, policy: nn.Module, value_backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.value_backbone = value_backbone
        self.value_head = nn.Linear(policy.config.hidden_size, 1)
        # Zero init: values start at 0 and, with a shared backbone, the first value-loss
        # gradients do not disturb the policy's features.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                select: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = ForwardInputs(input_ids, position_ids, attention_mask, select)
        logits, hidden = answer_logits(self.policy, inputs)  # (n, V), (n, H)
        if self.value_backbone is not None:
            hidden = answer_states(self.value_backbone, inputs)
        return logits, self.value_head(hidden).squeeze(-1).float()  # (n, V), (n,)


def sample_tokens(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """One token per row from `probs` (b, V), nucleus-truncated when top_p < 1."""
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest prefix reaching top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    # Inverse CDF rather than torch.multinomial, which on CPU costs ~15x more over a 49k vocabulary
    # (a noticeable share of a decoding step). The first index whose CDF exceeds u: a token of
    # probability 0 owns an empty interval and is never drawn.
    cdf = probs.double().cumsum(-1)  # (b, V)
    u = torch.rand((probs.shape[0], 1), device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=probs.shape[-1] - 1)


@dataclass
class Rollout:
    responses: torch.Tensor  # (B, T) sampled tokens, pad after each row's end
    logprobs: torch.Tensor  # (B, T) log-prob of each token under softmax(logits / temperature)
    entropy: torch.Tensor  # (B, T) entropy of that distribution
    values: torch.Tensor | None  # (B, T) value head on the state before each token (when given a head)


@torch.no_grad()
def sample_answers(policy: nn.Module, queries: torch.Tensor, query_mask: torch.Tensor, max_new_tokens: int,
                   temperature: float, top_p: float, stop_ids: list[int], stopping: Any, pad_id: int,
                   value_head: nn.Module | None = None) -> Rollout:
    """Sample answers with a KV cache from left-padded prompts; T = steps until every row ended.

    A row leaves the batch (and the cache) as soon as it emits an end token or completes a stop
    string. Each step's logits and last hidden state give the token's log-prob, the entropy and
    (with `value_head`) the value, so a rollout needs no second pass of the policy.
    """
    batch, device = queries.shape[0], queries.device
    backbone, lm_head = _causal_lm_parts(policy)
    out = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logprobs, entropy, values = (torch.zeros((batch, max_new_tokens), device=device) for _ in range(3))
    stop = torch.tensor(stop_ids, device=device)
    active = torch.arange(batch, device=device)  # rows still generating
    attention = query_mask
    step_ids, step_positions = queries, position_ids_for(query_mask)
    next_position = query_mask.sum(1)  # (b,)
    cache = None
    for t in range(max_new_tokens):
        output = backbone(input_ids=step_ids, attention_mask=attention, position_ids=step_positions,
                          past_key_values=cache, use_cache=True)
        cache = output.past_key_values
        hidden = output.last_hidden_state[:, -1]  # (b, H): the state before token t
        log_probs = torch.log_softmax(lm_head(hidden).float() / temperature, dim=-1)  # (b, V)
        probs = log_probs.exp()
        tokens = sample_tokens(probs, top_p)  # (b,)
        out[active, t] = tokens
        logprobs[active, t] = log_probs.gather(-1, tokens[:, None]).squeeze(1)
        entropy[active, t] = -(probs * log_probs).sum(-1)
        if value_head is not None:
            values[active, t] = value_head(hidden).squeeze(-1).float()
        # stop strings are looked for in the answer only (the prompt holds "###Instruction" itself)
        ended = torch.isin(tokens, stop) | stopping(out[active, : t + 1], None).to(device)
        if t + 1 == max_new_tokens or bool(ended.all()):
            break
        if bool(ended.any()):
            keep = (~ended).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, tokens, attention, next_position = active[keep], tokens[keep], attention[keep], next_position[keep]
        attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], 1)
        step_ids, step_positions = tokens[:, None], next_position[:, None]
        next_position = next_position + 1
    width = t + 1
    return Rollout(out[:, :width], logprobs[:, :width], entropy[:, :width],
                   values[:, :width] if value_head is not None else None)


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def incomplete_answers(answers: list[str]) -> list[bool]:
    """True where an answer lacks one of the five output fields (or leaves it empty)."""
    from rlaif_code.data.parse import FIELDS, parse_output

    return [any(not parse_output(answer).fields[name].strip() for name in FIELDS) for answer in answers]


def _accelerator(grad_accum: int, mixed_precision: str) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # `rlaif run` trains SFT and the reward model in this same process; their Trainer leaves the
    # process-wide AcceleratorState fixed to its own precision, and accelerate refuses a different one.
    # Only that state is reset (as TrainingArguments does): the distributed PartialState stays.
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(gradient_accumulation_steps=grad_accum, mixed_precision=mixed_precision)


def _use_bf16(setting: bool | str) -> bool:
    if setting == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(setting)


def load_frozen_reward_model(path: str, policy_tokenizer: Any, device: torch.device,
                             dtype: torch.dtype) -> tuple[nn.Module, Any, bool]:
    """(reward model, its tokenizer, whether its tokenizer differs from the policy's).

    PPO always hands the reward model text (prompt + decoded answer), which `score_texts`
    encodes with the reward model's own tokenizer, exactly as in reward training; so a
    different tokenizer is supported by re-tokenizing, and only reported.
    """
    from rlaif_code.reward import check_tokenizers, load_reward_model

    model, tokenizer = load_reward_model(path, device=str(device))
    if model.config.num_labels != 1:
        raise InputError(f"reward model {path} has num_labels={model.config.num_labels}; PPO needs a scalar "
                         "score (num_labels=1, the output of the reward stage)")
    retokenize = check_tokenizers(policy_tokenizer, tokenizer, retokenize=True)
    return model.to(dtype=dtype), tokenizer, retokenize


# ---------------------------------------------------------------- prompts and answers


def load_prompts(cfg: PPOConfig) -> list[str]:
    """The `prompt` field of each line of `prompts_file`, else of the data stage's train.jsonl."""
    path = Path(cfg.prompts_file) if cfg.prompts_file else Path(cfg.data_dir) / "train.jsonl"
    if not path.is_file():
        raise InputError(f"prompts not found: {path} (run the data stage, or set prompts_file)")
    prompts = []
    for lineno, row in iter_jsonl(path):
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"{path}:{lineno}: missing or empty 'prompt' field")
        prompts.append(prompt)
    if not prompts:
        raise InputError(f"{path}: no prompts: PPO needs at least one")
    return prompts


@lru_cache(maxsize=8)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return tuple(order)


def prompt_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """The prompts of `step` (1-based) for process `rank`: a seeded shuffle per pass over the data.

    A pure function of (seed, step), so a resumed run samples exactly what an unbroken one would.
    """
    start = (step - 1) * batch_size * world + rank * batch_size
    return [_epoch_order(n, seed, k // n)[k % n] for k in range(start, start + batch_size)]


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids, mask


def answer_ends(responses: torch.Tensor, tokenizer: Any, stop_ids: list[int]) -> tuple[list[int], list[bool], list[str]]:
    """For each generated row: (tokens that belong to the answer, whether it ended, the answer text).

    An answer ends at its first end token (which stays in the answer: emitting it was the
    policy's last action) or at the token that completes a stop string ("###Instruction"),
    whichever comes first. The text excludes both.
    """
    from rlaif_code.models import cut_at_stop

    lengths, finished, texts = [], [], []
    stop_set = set(stop_ids)
    for row in responses.tolist():
        end = next((i + 1 for i, tok in enumerate(row) if tok in stop_set), None)
        ended = end is not None
        end = end if end is not None else len(row)
        text, found = cut_at_stop(tokenizer.decode(row[:end], skip_special_tokens=True))
        if found:  # the shortest prefix whose text already holds a stop string
            low, high = 1, end
            while low < high:
                mid = (low + high) // 2
                if cut_at_stop(tokenizer.decode(row[:mid], skip_special_tokens=True))[1]:
                    high = mid
                else:
                    low = mid + 1
            end, ended = low, True
        lengths.append(max(end, 1))
        finished.append(ended)
        texts.append(text)
    return lengths, finished, texts


# ---------------------------------------------------------------- checkpoints


CHECKPOINTS = "checkpoints"


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}


def latest_checkpoint(out_dir: Path) -> Path | None:
    root = out_dir / CHECKPOINTS
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and (p / "state.pt").is_file())
    return done[-1] if done else None


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(accelerator: Any, out_dir: Path, step: int, model: nn.Module, optimizer: Any,
                    kl_coef: float, cfg: PPOConfig, keep: int) -> Path:
    """Write checkpoints/step-NNNNNN atomically: everything goes to a temporary directory renamed last."""
    root = out_dir / CHECKPOINTS
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        torch.save({"step": step, "model": _trainable_state(accelerator.unwrap_model(model)),
                    "optimizer": optimizer.state_dict(), "kl_coef": kl_coef, "config": to_dict(cfg)},
                   tmp / "state.pt")
        atomic_write_json(tmp / "checkpoint.json", {"step": step, "kl_coef": kl_coef, "config": to_dict(cfg)})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for path in (tmp, *tmp.iterdir()):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# Settings that decide the shape of what a checkpoint holds; a resume with others would not load.
_STRUCTURAL = ("policy", "value_head", "lora")


def load_checkpoint(accelerator: Any, path: Path, model: nn.Module, optimizer: Any, cfg: PPOConfig) -> tuple[int, float]:
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    saved, now = state["config"], to_dict(cfg)
    for key in _STRUCTURAL:
        if saved.get(key) != now.get(key):
            raise InputError(f"{path}: checkpoint was made with {key}={saved.get(key)!r}, the config now says "
                             f"{now.get(key)!r}; use a new out_dir or the old setting")
    unwrapped = accelerator.unwrap_model(model)
    missing, unexpected = unwrapped.load_state_dict(state["model"], strict=False)
    trainable = {name for name, p in unwrapped.named_parameters() if p.requires_grad}
    if unexpected or trainable & set(missing):
        raise InputError(f"{path}: checkpoint does not fit the model (missing {sorted(trainable & set(missing))[:3]}, "
                         f"unexpected {unexpected[:3]})")
    optimizer.load_state_dict(state["optimizer"])
    rng_file = path / f"rng-{accelerator.process_index}.pt"
    if rng_file.is_file():
        _set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    return int(state["step"]), float(state["kl_coef"])


# ---------------------------------------------------------------- logging


class StepLogger:
    """metrics.jsonl (every step), console and TensorBoard (every `log_every` steps); main process only."""

    def __init__(self, out_dir: Path, start_step: int, log_every: int, enabled: bool) -> None:
        self.enabled, self.log_every = enabled, log_every
        self.appender = self.writer = self.console = None
        if not enabled:
            return
        path = out_dir / "metrics.jsonl"
        if path.exists():  # steps after the checkpoint we resume from will be redone: drop their rows
            kept = [row for row in read_jsonl(path, tolerate_torn_tail=True) if row.get("step", 0) <= start_step]
            atomic_write_jsonl(path, kept)
        self.appender = JsonlAppender(path)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out_dir / "tb"), purge_step=start_step + 1)
        except ImportError:  # TensorBoard is optional
            self.writer = None
        try:
            from rich.console import Console

            self.console = Console()
        except ImportError:
            self.console = None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.appender.write({"step": step, **metrics})
        if step % self.log_every:
            return
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(f"ppo/{key}", value, step)
            self.writer.flush()
        line = (f"step {step:>5}  reward {metrics['reward_mean']:+.3f}±{metrics['reward_std']:.3f}  "
                f"kl {metrics['kl']:.3f}  entropy {metrics['entropy']:.3f}  clip {metrics['clip_fraction']:.3f}  "
                f"pg {metrics['policy_loss']:+.4f}  vf {metrics['value_loss']:.4f}  "
                f"ev {metrics['explained_variance']:+.2f}  len {metrics['response_length']:.1f}  "
                f"{metrics['tokens_per_s']:.0f} tok/s  {metrics['step_seconds']:.2f} s")
        if self.console is not None:
            self.console.print(line, highlight=False, soft_wrap=True)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.appender is not None:
            self.appender.close()
        if self.writer is not None:
            self.writer.close()


# ---------------------------------------------------------------- the stage


def run(cfg: PPOConfig, reward_fn: RewardFn | None = None) -> dict[str, Any]:
    """Train M_RL from M_SFT with PPO against the reward model (or `reward_fn(prompts, answers) -> scores`)."""
    from accelerate.utils import set_seed
    from transformers import AutoModel, StopStringCriteria

    from rlaif_code.models import load_causal_lm, resolve_model, save_model, stop_strings, stop_token_ids
    from rlaif_code.reward import score_texts

    check_config(cfg)
    out_dir = Path(cfg.out_dir)
    if stage_is_done(out_dir, "ppo", cfg):
        return {"skipped": True, **(read_stage_record(out_dir) or {}).get("metrics", {})}
    prompts_text = load_prompts(cfg)

    use_bf16 = _use_bf16(cfg.bf16)
    accelerator = _accelerator(cfg.grad_accum, "bf16" if use_bf16 else "no")
    device = accelerator.device
    set_seed(cfg.seed + accelerator.process_index)
    frozen_dtype = torch.bfloat16 if use_bf16 and device.type == "cuda" else torch.float32

    # ---- models: policy (+ value) trains; reference and reward model are frozen
    policy, tokenizer = load_causal_lm(cfg.policy, dtype="float32", device="cpu", padding_side="left")
    disable_dropout(policy)
    ref_policy = None
    if cfg.lora.enabled:
        from peft import get_peft_model

        policy = get_peft_model(policy, cfg.lora.peft_config())
    else:
        ref_policy = copy.deepcopy(policy).to(device=device, dtype=frozen_dtype).eval().requires_grad_(False)
    value_backbone = None
    if cfg.value_head == "separate":
        value_backbone = AutoModel.from_pretrained(resolve_model(cfg.policy), dtype=torch.float32)
        if value_backbone.get_input_embeddings().num_embeddings < len(tokenizer):
            value_backbone.resize_token_embeddings(len(tokenizer))
        disable_dropout(value_backbone)
    model = PolicyWithValue(policy, value_backbone)
    # fused: one kernel per step and no parameter-sized temporaries (lower peak memory than foreach)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate, eps=1e-5,
                                  fused=device.type in ("cpu", "cuda"))
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    reward_model = reward_tokenizer = None
    if reward_fn is None:
        reward_model, reward_tokenizer, retokenize = load_frozen_reward_model(cfg.reward_model, tokenizer, device,
                                                                              frozen_dtype)
        if retokenize:
            accelerator.print(f"{cfg.reward_model}: its tokenizer differs from the policy's; answers are decoded "
                              "and re-tokenized with the reward model's own tokenizer")

    stop_ids = stop_token_ids(tokenizer)
    # Built once: it precomputes a table over the whole vocabulary (generate(stop_strings=...)
    # rebuilds it on every call: its cache misses because get_vocab() order varies).
    stopping = StopStringCriteria(tokenizer, stop_strings())
    pack_tokens, pair_cost = cfg.pack_tokens, attention_cost(unwrapped.policy.config)
    if pack_tokens and not packing_keeps_sequences_apart(unwrapped.policy):
        accelerator.print(f"{cfg.policy}: this architecture ignores packed position ids; using padded rows")
        pack_tokens = 0

    # ---- prompts: tokenized once; over-long ones are left out
    encoded = tokenizer(prompts_text, add_special_tokens=True)["input_ids"]
    keep = [i for i, ids in enumerate(encoded) if 0 < len(ids) <= cfg.max_prompt_tokens]
    if not keep:
        raise InputError(f"no prompt fits max_prompt_tokens={cfg.max_prompt_tokens} "
                         f"(shortest has {min(len(e) for e in encoded)} tokens)")
    prompts_text = [prompts_text[i] for i in keep]
    prompt_ids = [encoded[i] for i in keep]
    dropped_prompts = len(encoded) - len(keep)

    # ---- resume
    kl_ctl = make_kl_controller(cfg)
    start_step = 0
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is not None:
        start_step, kl_ctl.value = load_checkpoint(accelerator, checkpoint, model, optimizer, cfg)
        if start_step > cfg.total_steps:
            raise InputError(f"{checkpoint}: this run already went past total_steps={cfg.total_steps}; raise "
                             "total_steps or use a new out_dir")
        accelerator.print(f"resuming from {checkpoint} (step {start_step})")
    if accelerator.is_main_process:
        for stale in (out_dir / CHECKPOINTS).glob(".step-*.tmp"):  # from a save that was killed
            shutil.rmtree(stale, ignore_errors=True)
    logger = StepLogger(out_dir, start_step, cfg.log_every, accelerator.is_main_process)

    micro_size = cfg.mini_batch_size // cfg.grad_accum
    history: list[dict[str, float]] = []
    for step in range(start_step + 1, cfg.total_steps + 1):
        step_start, step_cpu_start = time.perf_counter(), time.process_time()

        # ---- 1. rollouts
        b_prompt_index = prompt_indices(len(prompt_ids), cfg.batch_size, step, cfg.seed,
                                        accelerator.process_index, accelerator.num_processes)
        b_prompts = [prompts_text[i] for i in b_prompt_index]
        queries, query_mask = left_pad([prompt_ids[i] for i in b_prompt_index], tokenizer.pad_token_id)
        queries, query_mask = queries.to(device), query_mask.to(device)  # (B, P)
        context_length = queries.shape[1]
        unwrapped.eval()
        shared_values = unwrapped.value_head if unwrapped.value_backbone is None else None
        with accelerator.autocast():
            rollout = sample_answers(unwrapped.policy, queries, query_mask, cfg.max_new_tokens, cfg.temperature,
                                     cfg.top_p, stop_ids, stopping, tokenizer.pad_token_id, shared_values)
        b_responses = rollout.responses  # (B, T)
        lengths, finished, answers = answer_ends(b_responses, tokenizer, stop_ids)
        b_lengths = torch.tensor(lengths, device=device)  # (B,)
        b_finished = torch.tensor(finished, device=device)  # (B,)
        width = b_responses.shape[1]
        b_mask = torch.arange(width, device=device)[None, :] < b_lengths[:, None]  # (B, T) answer tokens
        b_query_responses = torch.cat([queries, b_responses], 1)  # (B, P + T)
        b_attention = torch.cat([query_mask, b_mask.long()], 1)  # (B, P + T)
        gen_seconds = time.perf_counter() - step_start

        # ---- 2. scores: reward model (or reward_fn) on prompt + answer
        if reward_fn is not None:
            b_scores = torch.as_tensor(reward_fn(b_prompts, answers), dtype=torch.float32).to(device).reshape(-1)
            if b_scores.shape[0] != len(answers):
                raise ValueError(f"reward_fn returned {b_scores.shape[0]} scores for {len(answers)} answers")
        else:
            texts = [p + a for p, a in zip(b_prompts, answers)]
            with accelerator.autocast():
                b_scores = torch.tensor(score_texts(reward_model, reward_tokenizer, texts, micro_size),
                                        dtype=torch.float32, device=device)
        b_raw_scores = b_scores.clone()  # (B,)
        if cfg.whiten_rewards:
            b_scores = (b_scores - b_scores.mean()) / (b_scores.std() + 1e-8)
        if cfg.missing_eos_penalty is not None:
            b_scores = b_scores - cfg.missing_eos_penalty * (~b_finished).float()
        b_incomplete = torch.tensor(incomplete_answers(answers), device=device)  # (B,)
        if cfg.incomplete_answer_penalty is not None:
            b_scores = b_scores - cfg.incomplete_answer_penalty * b_incomplete.float()

        # ---- 3. logprobs of policy and reference, values (no gradients, micro-batches)
        b_logprobs, b_entropy = rollout.logprobs.clone(), rollout.entropy.clone()  # (B, T) each
        b_values = rollout.values.clone() if rollout.values is not None else torch.zeros(b_mask.shape, device=device)
        b_ref_logprobs = torch.zeros(b_mask.shape, device=device)  # (B, T)
        recompute = cfg.rollout_logprobs == "recompute"
        with torch.no_grad(), accelerator.autocast():
            for start in range(0, b_mask.shape[0], micro_size):
                rows = slice(start, start + micro_size)
                mb_mask = b_mask[rows]  # (b, T)
                inputs = forward_inputs(b_query_responses[rows], b_attention[rows], context_length, mb_mask,
                                        pack_tokens, pair_cost)
                tokens = b_responses[rows][mb_mask]  # (n,) answer tokens
                if recompute:
                    logits, values = unwrapped(*inputs.as_args())  # (n, V), (n,)
                    logits = logits.float() / cfg.temperature
                    b_logprobs[rows][mb_mask] = token_logprobs(logits, tokens)
                    b_entropy[rows][mb_mask] = token_entropy(logits)
                    b_values[rows][mb_mask] = values
                    del logits
                elif unwrapped.value_backbone is not None:  # a separate value model needs its own pass
                    b_values[rows][mb_mask] = unwrapped.value_head(
                        answer_states(unwrapped.value_backbone, inputs)).squeeze(-1).float()
                if ref_policy is None:  # LoRA: the reference is the same network without adapters
                    with unwrapped.policy.disable_adapter():
                        ref_logits, _ = answer_logits(unwrapped.policy, inputs)
                else:
                    ref_logits, _ = answer_logits(ref_policy, inputs)
                b_ref_logprobs[rows][mb_mask] = token_logprobs(ref_logits.float() / cfg.temperature, tokens)
                del ref_logits

            # ---- 4. rewards, advantages, returns
            b_logprobs, b_ref_logprobs, b_values = (x * b_mask for x in (b_logprobs, b_ref_logprobs, b_values))
            b_rewards, b_kl = kl_penalized_rewards(b_logprobs, b_ref_logprobs, b_scores, b_mask, kl_ctl.value)
            b_advantages, b_returns = gae(b_rewards, b_values, b_mask, cfg.gamma, cfg.lam)  # (B, T) each
            if cfg.whiten_advantages:
                b_advantages = masked_whiten(b_advantages, b_mask)
        rollout_seconds = time.perf_counter() - step_start

        # ---- 5. PPO epochs over shuffled minibatches
        unwrapped.train()
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "clip_fraction",
                                                         "value_clip_fraction", "approx_kl", "grad_norm")}
        for _epoch in range(cfg.ppo_epochs):
            b_order = torch.randperm(cfg.batch_size, device=device)
            for mb_start in range(0, cfg.batch_size, cfg.mini_batch_size):
                mb_order = b_order[mb_start: mb_start + cfg.mini_batch_size]
                for micro_start in range(0, cfg.mini_batch_size, micro_size):
                    mb_inds = mb_order[micro_start: micro_start + micro_size]
                    with accelerator.accumulate(model):
                        mb_mask = b_mask[mb_inds]  # (b, T)
                        inputs = forward_inputs(b_query_responses[mb_inds], b_attention[mb_inds], context_length,
                                                mb_mask, pack_tokens, pair_cost)
                        logits, mb_new_values = model(*inputs.as_args())  # (n, V), (n,) over answer tokens
                        mb_new_logprobs = token_logprobs(logits.float() / cfg.temperature,
                                                         b_responses[mb_inds][mb_mask])  # (n,)
                        del logits
                        pg_loss, pg_stats = clipped_policy_loss(mb_new_logprobs, b_logprobs[mb_inds][mb_mask],
                                                                b_advantages[mb_inds][mb_mask], None, cfg.clip_range)
                        vf_loss, vf_clip = clipped_value_loss(mb_new_values, b_values[mb_inds][mb_mask],
                                                              b_returns[mb_inds][mb_mask], None, cfg.clip_range_value)
                        loss = pg_loss + cfg.vf_coef * vf_loss
                        accelerator.backward(loss)
                        if accelerator.sync_gradients:
                            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                            stats["grad_norm"].append(float(grad_norm))
                        optimizer.step()
                        optimizer.zero_grad()
                    stats["policy_loss"].append(pg_loss.item())
                    stats["value_loss"].append(vf_loss.item())
                    stats["clip_fraction"].append(pg_stats["clip_fraction"].item())
                    stats["approx_kl"].append(pg_stats["approx_kl"].item())
                    stats["value_clip_fraction"].append(vf_clip.item())

        # ---- 6. KL controller, metrics
        seq_kl = accelerator.gather(b_kl.sum(1)).mean().item()  # nats per answer, all processes
        kl_coef_used = kl_ctl.value
        kl_ctl.update(seq_kl, cfg.batch_size * accelerator.num_processes)
        step_seconds = time.perf_counter() - step_start
        all_scores = accelerator.gather(b_raw_scores)
        answer_tokens = accelerator.gather(b_lengths.sum()).sum().item()
        metrics = {
            "reward_mean": all_scores.mean().item(),
            "reward_std": all_scores.std().item() if all_scores.numel() > 1 else 0.0,
            "penalized_reward_mean": accelerator.gather(b_scores).mean().item(),  # what PPO optimises
            "kl": seq_kl,
            "kl_coef": kl_coef_used,
            "entropy": masked_mean(b_entropy, b_mask).item(),
            "clip_fraction": float(np.mean(stats["clip_fraction"])),
            "approx_kl": float(np.mean(stats["approx_kl"])),
            "policy_loss": float(np.mean(stats["policy_loss"])),
            "value_loss": float(np.mean(stats["value_loss"])),
            "value_clip_fraction": float(np.mean(stats["value_clip_fraction"])),
            "grad_norm": float(np.mean(stats["grad_norm"])) if stats["grad_norm"] else 0.0,
            "explained_variance": explained_variance(b_values, b_returns, b_mask),
            "response_length": b_lengths.float().mean().item(),
            "incomplete_fraction": accelerator.gather(b_incomplete.float()).mean().item(),
            "generated_width": width,  # decoding steps run (the longest answer, at most max_new_tokens)
            "ended_fraction": b_finished.float().mean().item(),
            "tokens_per_s": answer_tokens / step_seconds,
            "step_seconds": step_seconds,
            # CPU time of this process (all its threads): on a shared machine, the work done
            "step_cpu_seconds": time.process_time() - step_cpu_start,
            "rollout_seconds": rollout_seconds,
            "generate_seconds": gen_seconds,
            "train_seconds": step_seconds - rollout_seconds,
        }
        history.append(metrics)
        logger.log(step, metrics)

        if step % cfg.save_every == 0 or step == cfg.total_steps:
            save_checkpoint(accelerator, out_dir, step, model, optimizer, kl_ctl.value, cfg, cfg.keep_checkpoints)

    logger.close()

    # ---- final policy: a plain model directory (LoRA merged) carrying the config
    result: dict[str, Any] = {
        "steps": cfg.total_steps,
        "resumed_from_step": start_step,
        "prompts": len(prompt_ids),
        "prompts_too_long": dropped_prompts,
        "kl_coef": kl_ctl.value,
    }
    if history:
        result.update({"reward_mean_first": history[0]["reward_mean"], "reward_mean_last": history[-1]["reward_mean"],
                       "kl_last": history[-1]["kl"]})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model_dir = out_dir / "model"
        tmp = out_dir / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(accelerator.unwrap_model(model).policy, tokenizer, tmp)
        write_stage_record(tmp, "ppo", cfg, metrics=result)
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(tmp, model_dir)
        result["model_dir"] = str(model_dir)
        write_stage_record(out_dir, "ppo", cfg, metrics=result, outputs=["metrics.jsonl"])
    accelerator.wait_for_everyone()
    return result
