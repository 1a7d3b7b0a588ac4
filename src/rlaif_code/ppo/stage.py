"""PPO against the reward model: M_SFT -> M_RL, the last training stage of RLAIF.

`train` is the loop, written the way CleanRL writes PPO: batch tensors are `b_*`, minibatch
(micro-batch) tensors `mb_*`, shapes in comments. Per step: sample prompts -> generate answers
(`rollout.sample_answers`) -> score = the reward model's logit on prompt + answer (or
`reward_fn`) -> per-token reward = -kl_coef * (logp - ref_logp), plus the score on the answer's
last token -> GAE -> `ppo_epochs` over shuffled minibatches of the clipped surrogate + clipped
value loss (`losses`) -> KL controller.

Memory: the value function is by default a scalar head on the policy's own last hidden state
(no second network, no second optimizer state); the reference policy is either a frozen copy
or, with LoRA, the same network with its adapters disabled; reference and reward model run
without gradients (bf16 where it pays); logits are computed only for answer tokens (`layout`).

Speed: the sampler's own logits and hidden states give the old log-probs, entropies and
(shared-head) values, so a rollout needs no second policy pass (`rollout_logprobs: recompute`
adds one for bit-exact old log-probs); forward passes pack the ragged sequences end to end.

Tokenizers: the reward model always reads text (`reward.model.score_texts`, its own tokenizer),
so a reward model whose tokenizer differs from the policy's works unchanged (the run says so).

Outputs (in `out_dir`): `metrics.jsonl` (one row per step), `tb/` (TensorBoard),
`checkpoints/step-NNNNNN/` (`checkpoint`), `model/` (the final policy as a plain Hugging Face
model, LoRA merged, with its tokenizer and a stage.json carrying the config), and `stage.json`.
A killed run restarts from its latest checkpoint.

Data parallel: under `accelerate launch` every process samples `batch_size` rollouts per step
from its own share of the prompts; gradients are averaged by Accelerate.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from rlaif_code.core.artifacts import finished_result
from rlaif_code.ppo.checkpoint import save_checkpoint
from rlaif_code.ppo.config import PPOConfig
from rlaif_code.ppo.dev import prune_best, write_outputs
from rlaif_code.ppo.layout import BatchLayout, answer_logits, answer_states
from rlaif_code.ppo.losses import (
    anchor_nll,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    kl_k3,
    kl_penalized_rewards,
    masked_mean,
    masked_whiten,
    token_entropy,
    token_logprobs,
)
from rlaif_code.ppo.rewards import source_scores
from rlaif_code.ppo.rollout import (
    Rollout,
    answer_texts,
    incomplete_answers,
    left_pad,
    prompt_indices,
    right_pad,
    rollout_seeds,
    sample_answers,
)
from rlaif_code.ppo.setup import RewardFn, Setup, setup


def step_prompts(cfg: PPOConfig, s: Setup, step: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """This process's prompts for `step`: (texts, left-padded ids (B, P), their attention mask (B, P))."""
    accelerator = s.accelerator
    b_prompt_index = prompt_indices(len(s.prompts.ids), cfg.batch_size, step, cfg.seed,
                                    accelerator.process_index, accelerator.num_processes)
    queries, query_mask = left_pad([s.prompts.ids[i] for i in b_prompt_index], s.tokenizer.pad_token_id)
    return ([s.prompts.texts[i] for i in b_prompt_index], queries.to(accelerator.device),
            query_mask.to(accelerator.device))


def generate(cfg: PPOConfig, s: Setup, step: int, queries: torch.Tensor, query_mask: torch.Tensor) -> Rollout:
    from rlaif_code.sample.stops import answer_ends_for

    s.unwrapped.eval()
    shared_values = s.unwrapped.value_head if s.unwrapped.value_backbone is None else None
    seeds = rollout_seeds(cfg.seed, step, queries.shape[0], s.accelerator.process_index)
    with s.accelerator.autocast():
        return sample_answers(s.unwrapped.policy, queries, query_mask, cfg.max_new_tokens, cfg.temperature,
                              cfg.top_p, answer_ends_for(s.tokenizer), s.tokenizer.pad_token_id, seeds, shared_values)


def score_answers(cfg: PPOConfig, s: Setup, prompts: list[str], answers: list[str],
                  batch_size: int) -> torch.Tensor:
    """(B,) float32: `reward_fn(prompts, answers)` when given, else by `reward_source` (`rewards.source_scores`)."""
    return source_scores(cfg, s.reward_fn, s.reward_model, s.reward_tokenizer, s.feedback, prompts, answers,
                         batch_size, s.accelerator.device, s.accelerator.autocast)


def penalized_scores(cfg: PPOConfig, accelerator: Any, b_raw_scores: torch.Tensor, b_finished: torch.Tensor,
                     answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(what PPO optimises (B,), whether each answer lacks a Gorilla field (B,))."""
    b_scores = b_raw_scores
    if cfg.whiten_rewards:  # over every process's scores, as one process with the whole batch would
        all_scores = accelerator.gather(b_scores)
        b_scores = (b_scores - all_scores.mean()) / (all_scores.std() + 1e-8)
    if cfg.missing_eos_penalty is not None:
        b_scores = b_scores - cfg.missing_eos_penalty * (~b_finished).float()
    b_incomplete = torch.tensor(incomplete_answers(answers), device=b_raw_scores.device)
    if cfg.incomplete_answer_penalty is not None:
        b_scores = b_scores - cfg.incomplete_answer_penalty * b_incomplete.float()
    return b_scores, b_incomplete


def old_and_reference_logprobs(cfg: PPOConfig, s: Setup, rollout: Rollout, layout: BatchLayout,
                               micro_size: int) -> tuple[torch.Tensor, ...]:
    """(logprobs, entropy, values, ref_logprobs), each (B, T), in micro-batches; call without gradients.

    The policy's come from the sampler unless `rollout_logprobs` is recompute; a separate value
    model and the reference need a pass of their own.
    """
    b_mask = layout.answer_mask  # (B, T)
    b_logprobs, b_entropy = rollout.logprobs.clone(), rollout.entropy.clone()
    device = b_mask.device
    b_values = rollout.values.clone() if rollout.values is not None else torch.zeros(b_mask.shape, device=device)
    b_ref_logprobs = torch.zeros(b_mask.shape, device=device)
    policy = s.unwrapped.policy
    for start in range(0, b_mask.shape[0], micro_size):
        rows = slice(start, start + micro_size)
        mb_mask = b_mask[rows]  # (b, T); b_x[rows][mb_mask] = ... writes through the view into b_x
        inputs = layout.inputs(rows)
        tokens = layout.tokens(rows)  # (n,)
        if cfg.rollout_logprobs == "recompute":
            logits, values = s.unwrapped(*inputs.as_args())  # (n, V), (n,)
            logits = logits.float() / cfg.temperature
            b_logprobs[rows][mb_mask] = token_logprobs(logits, tokens)
            b_entropy[rows][mb_mask] = token_entropy(logits)
            b_values[rows][mb_mask] = values
            del logits
        elif s.unwrapped.value_backbone is not None:
            b_values[rows][mb_mask] = s.unwrapped.value_head(
                answer_states(s.unwrapped.value_backbone, inputs)).squeeze(-1).float()
        if s.ref_policy is None:
            with policy.disable_adapter():
                ref_logits, _ = answer_logits(policy, inputs)
        else:
            ref_logits, _ = answer_logits(s.ref_policy, inputs)
        b_ref_logprobs[rows][mb_mask] = token_logprobs(ref_logits.float() / cfg.temperature, tokens)
        del ref_logits
    return b_logprobs, b_entropy, b_values, b_ref_logprobs


def micro_batch_losses(cfg: PPOConfig, accelerator: Any, model: nn.Module, layout: BatchLayout,
                       micro_inds: torch.Tensor, b_logprobs: torch.Tensor, b_values: torch.Tensor,
                       b_advantages: torch.Tensor, b_returns: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(policy loss, its stats, value loss, value clip fraction) of the rows `micro_inds`."""
    mb_mask = layout.answer_mask[micro_inds]  # (b, T)
    logits, mb_new_values = model(*layout.inputs(micro_inds).as_args())  # (n, V), (n,) over answer tokens
    mb_new_logprobs = token_logprobs(logits.float() / cfg.temperature, layout.tokens(micro_inds))  # (n,)
    del logits
    pg_loss, pg_stats = clipped_policy_loss(mb_new_logprobs, b_logprobs[micro_inds][mb_mask],
                                            b_advantages[micro_inds][mb_mask], cfg.clip_range)
    vf_loss, vf_clip = clipped_value_loss(mb_new_values, b_values[micro_inds][mb_mask],
                                          b_returns[micro_inds][mb_mask], cfg.clip_range_value)
    # The losses are token means over this process's micro-batch, and DDP averages the processes'
    # gradients: weighting each by its share of the tokens makes that the token mean of the whole
    # micro-batch, as one process would compute it (the weight is exactly 1 for one process).
    n_tokens = mb_mask.sum().float()
    weight = n_tokens * accelerator.num_processes / accelerator.reduce(n_tokens.clone(), "sum")
    return pg_loss * weight, pg_stats, vf_loss * weight, vf_clip


def anchor_layout(s: Setup, prompts: list[str], queries: torch.Tensor, query_mask: torch.Tensor) -> BatchLayout:
    """The step's prompts with their reference answers in place of the rollouts (B, P + R)."""
    refs, ref_mask = right_pad([s.references[p] for p in prompts], s.tokenizer.pad_token_id, queries.device)
    return BatchLayout(torch.cat([queries, refs], 1), torch.cat([query_mask, ref_mask.long()], 1), queries.shape[1],
                       refs, ref_mask, s.pack_tokens, s.pair_cost)


def micro_batch_anchor(model: nn.Module, layout: BatchLayout, micro_inds: torch.Tensor) -> torch.Tensor:
    """The supervised anchor of the rows `micro_inds`: their reference answers' mean token NLL."""
    logits, _ = model(*layout.inputs(micro_inds).as_args())  # (n, V) over reference-answer tokens
    return anchor_nll(logits, layout.tokens(micro_inds))


def step_metrics(accelerator: Any, stats: dict[str, list[float]], seq_kl: float, kl_coef: float,
                 b_raw_scores: torch.Tensor, b_scores: torch.Tensor, b_incomplete: torch.Tensor,
                 b_finished: torch.Tensor, b_lengths: torch.Tensor, b_mask: torch.Tensor, b_entropy: torch.Tensor,
                 b_values: torch.Tensor, b_returns: torch.Tensor, seconds: dict[str, float],
                 step_cpu_start: float) -> dict[str, float]:
    """One row of metrics.jsonl. Scores, KL and token counts are over all processes; the rest are this one's."""
    step_seconds = seconds["step"]
    all_scores = accelerator.gather(b_raw_scores)
    answer_tokens = accelerator.gather(b_lengths.sum()).sum().item()
    return {
        "reward_mean": all_scores.mean().item(),
        "reward_std": all_scores.std().item() if all_scores.numel() > 1 else 0.0,
        "penalized_reward_mean": accelerator.gather(b_scores).mean().item(),  # what PPO optimises
        "kl": seq_kl,
        "kl_coef": kl_coef,
        "entropy": masked_mean(b_entropy, b_mask).item(),
        "clip_fraction": float(np.mean(stats["clip_fraction"])),
        "approx_kl": float(np.mean(stats["approx_kl"])),
        "policy_loss": float(np.mean(stats["policy_loss"])),
        "value_loss": float(np.mean(stats["value_loss"])),
        "value_clip_fraction": float(np.mean(stats["value_clip_fraction"])),
        "grad_norm": float(np.mean(stats["grad_norm"])) if stats["grad_norm"] else 0.0,
        **({"anchor_nll": float(np.mean(stats["anchor_nll"]))} if stats.get("anchor_nll") else {}),
        "explained_variance": explained_variance(b_values, b_returns, b_mask),
        "response_length": b_lengths.float().mean().item(),
        "incomplete_fraction": accelerator.gather(b_incomplete.float()).mean().item(),
        "generated_width": b_mask.shape[1],  # decoding steps run (the longest answer, at most max_new_tokens)
        "ended_fraction": b_finished.float().mean().item(),
        "tokens_per_s": answer_tokens / step_seconds,
        "step_seconds": step_seconds,
        # CPU time of this process (all its threads): on a shared machine, the work done
        "step_cpu_seconds": time.process_time() - step_cpu_start,
        # this process's resident memory now and at its peak (Linux): a leak shows as a rising rss_mb
        "rss_mb": _rss_mb("VmRSS"),
        "peak_rss_mb": _rss_mb("VmHWM"),
        "rollout_seconds": seconds["rollout"],
        "generate_seconds": seconds["generate"],
        "train_seconds": step_seconds - seconds["rollout"],
    }


def _rss_mb(field: str) -> float:
    """VmRSS / VmHWM of /proc/self/status in MiB; NaN where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ---------------------------------------------------------------- the loop


def train(cfg: PPOConfig, s: Setup) -> list[dict[str, float]]:
    """PPO from `s.start_step` to `cfg.total_steps`; one metrics row per step."""
    accelerator, model, optimizer, device = s.accelerator, s.model, s.optimizer, s.accelerator.device
    micro_size = cfg.mini_batch_size // cfg.grad_accum
    history: list[dict[str, float]] = []
    if s.start_step == 0:  # the SFT model is step 0 of the selection: RL can never hand back worse
        s.selector.after_step(0, None, s.unwrapped.policy, s.tokenizer, accelerator.autocast)
    if s.selector.selection.stopped:  # killed after an early stop's checkpoint: the run is over
        s.stopped = (s.start_step, s.selector.selection.stopped)
    last_step = s.start_step if s.stopped else cfg.total_steps
    for step in range(s.start_step + 1, last_step + 1):
        step_start, step_cpu_start = time.perf_counter(), time.process_time()

        # ---- 1. rollouts: an answer to each of B prompts, each ending at its own length
        b_prompts, queries, query_mask = step_prompts(cfg, s, step)  # queries, query_mask: (B, P)
        rollout = generate(cfg, s, step, queries, query_mask)
        b_responses = rollout.responses  # (B, T)
        answers = answer_texts(rollout, s.tokenizer)
        b_lengths = torch.tensor(rollout.lengths, device=device)  # (B,) the decoder's ends, end token included
        b_finished = torch.tensor(rollout.ended, device=device)  # (B,)
        b_mask = torch.arange(b_responses.shape[1], device=device)[None, :] < b_lengths[:, None]  # (B, T)
        b_query_responses = torch.cat([queries, b_responses], 1)  # (B, P + T)
        b_attention = torch.cat([query_mask, b_mask.long()], 1)  # (B, P + T)
        layout = BatchLayout(b_query_responses, b_attention, queries.shape[1], b_responses, b_mask, s.pack_tokens,
                             s.pair_cost)
        seconds = {"generate": time.perf_counter() - step_start}
        anchor = anchor_layout(s, b_prompts, queries, query_mask) if s.references is not None else None

        # ---- 2. scores: the reward model (or reward_fn) on prompt + answer, less the penalties
        b_raw_scores = score_answers(cfg, s, b_prompts, answers, micro_size)  # (B,)
        b_scores, b_incomplete = penalized_scores(cfg, accelerator, b_raw_scores, b_finished, answers)  # (B,) each

        with torch.no_grad(), accelerator.autocast():
            # ---- 3. old log-probs, entropies and values; the reference policy's log-probs
            b_logprobs, b_entropy, b_values, b_ref_logprobs = old_and_reference_logprobs(
                cfg, s, rollout, layout, micro_size)  # (B, T) each

            # ---- 4. per-token rewards (KL penalty, score on the last token), advantages, returns
            b_logprobs, b_ref_logprobs, b_values = (x * b_mask for x in (b_logprobs, b_ref_logprobs, b_values))
            b_rewards, _ = kl_penalized_rewards(b_logprobs, b_ref_logprobs, b_scores, b_mask, s.kl_ctl.value)
            b_advantages, b_returns = gae(b_rewards, b_values, b_mask, cfg.gamma, cfg.lam)  # (B, T) each
            if cfg.whiten_advantages:
                b_advantages = masked_whiten(b_advantages, b_mask, lambda t: accelerator.reduce(t, "sum"))
        seconds["rollout"] = time.perf_counter() - step_start

        # ---- 5. PPO epochs over shuffled minibatches, each in grad_accum micro-batches
        s.unwrapped.train()
        stats: dict[str, list[float]] = defaultdict(list)
        for _epoch in range(cfg.ppo_epochs):
            b_inds = torch.randperm(cfg.batch_size, device=device)
            for mini_start in range(0, cfg.batch_size, cfg.mini_batch_size):
                mini_inds = b_inds[mini_start: mini_start + cfg.mini_batch_size]  # a minibatch's rows
                for micro_start in range(0, cfg.mini_batch_size, micro_size):
                    micro_inds = mini_inds[micro_start: micro_start + micro_size]  # a micro-batch's rows
                    with accelerator.accumulate(model):
                        pg_loss, pg_stats, vf_loss, vf_clip = micro_batch_losses(
                            cfg, accelerator, model, layout, micro_inds, b_logprobs, b_values, b_advantages, b_returns)
                        loss = pg_loss + cfg.vf_coef * vf_loss
                        if anchor is not None:  # the reference answers of the same rows
                            mb_anchor = micro_batch_anchor(model, anchor, micro_inds)
                            loss = loss + cfg.anchor_coef * mb_anchor
                            stats["anchor_nll"].append(mb_anchor.item())
                        accelerator.backward(loss)
                        if accelerator.sync_gradients:  # the minibatch's last micro-batch
                            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                            stats["grad_norm"].append(float(grad_norm))
                        optimizer.step()
                        optimizer.zero_grad()
                    mb_stats = {"policy_loss": pg_loss, "value_loss": vf_loss, "value_clip_fraction": vf_clip,
                                **pg_stats}
                    for key, value in mb_stats.items():
                        stats[key].append(value.item())

        # ---- 6. KL controller, metrics, checkpoint
        # nats per answer over all processes, with the estimator that cannot go negative
        seq_kl = accelerator.gather(kl_k3(b_logprobs, b_ref_logprobs, b_mask).sum(1)).mean().item()
        kl_coef_used = s.kl_ctl.value
        s.kl_ctl.update(seq_kl, cfg.batch_size * accelerator.num_processes)
        seconds["step"] = time.perf_counter() - step_start
        metrics = step_metrics(accelerator, stats, seq_kl, kl_coef_used, b_raw_scores, b_scores, b_incomplete,
                               b_finished, b_lengths, b_mask, b_entropy, b_values, b_returns, seconds, step_cpu_start)
        history.append(metrics)
        s.logger.log(step, metrics)
        stop = s.selector.after_step(step, seq_kl, s.unwrapped.policy, s.tokenizer, accelerator.autocast)
        if step % cfg.save_every == 0 or step == cfg.total_steps or stop:
            save_checkpoint(accelerator, Path(cfg.out_dir), step, model, optimizer, s.kl_ctl.value, cfg,
                            cfg.keep_checkpoints, s.selector.selection.to_dict())
            if accelerator.is_main_process:  # the checkpoint now names the best: older best/ folders can go
                prune_best(Path(cfg.out_dir), keep_from=max(s.selector.selection.best_step, 0))
        if stop:
            accelerator.print(f"PPO stops at step {step}: {stop}")
            s.stopped = (step, stop)
            break
    s.logger.close()
    s.selector.close()
    return history


# ---------------------------------------------------------------- the stage


def save_final_model(cfg: PPOConfig, s: Setup, history: list[dict[str, float]]) -> dict[str, Any]:
    """The policy as a plain model directory (LoRA merged) carrying the config; then stage.json."""

    selection = s.selector.selection
    last_step = s.stopped[0] if s.stopped else cfg.total_steps
    result: dict[str, Any] = {
        "steps": last_step,
        "stopped": s.stopped[1] if s.stopped else None,
        # best_step -1: no step was eligible (step 0 collapsed): the SFT model is handed back
        "selected_step": max(selection.best_step, 0) if s.selector.dev is not None else last_step,
        "selected_dev_value": selection.best_value if selection.best_step >= 0 else None,
        "select_metric": cfg.select_metric if s.selector.dev is not None else None,
        "resumed_from_step": s.start_step,
        "prompts": len(s.prompts.ids),
        "prompts_too_long": s.prompts.too_long,
        "kl_coef": s.kl_ctl.value,
    }
    if history:
        result.update({"reward_mean_first": history[0]["reward_mean"], "reward_mean_last": history[-1]["reward_mean"],
                       "kl_last": history[-1]["kl"]})
    out_dir = Path(cfg.out_dir)
    accelerator = s.accelerator
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_outputs(cfg, out_dir, selection if s.selector.dev is not None else None,
                      accelerator.unwrap_model(s.model).policy, s.tokenizer, result)
    accelerator.wait_for_everyone()
    return result


def run(cfg: PPOConfig, reward_fn: RewardFn | None = None) -> dict[str, Any]:
    """Train M_RL from M_SFT with PPO against the reward model (or `reward_fn(prompts, answers) -> scores`)."""
    if (done := finished_result(Path(cfg.out_dir), "ppo", cfg)) is not None:
        return done
    if cfg.algorithm != "ppo":  # GRPO / RLOO: TRL's trainers on the same rewards, selection and outputs
        from rlaif_code.ppo.trl_loop import run_trl

        return run_trl(cfg, reward_fn)
    s = setup(cfg, reward_fn)
    history = train(cfg, s)
    return save_final_model(cfg, s, history)
