"""What the PPO loop needs, built once: accelerator, policy + value, reference, optimizer,
reward model, prompts and the point to resume from (`setup` -> `Setup`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from rlaif_code.core.artifacts import InputError
from rlaif_code.core.training import use_bf16
from rlaif_code.ppo.checkpoint import claim_checkpoints, drop_unfinished_saves, load_checkpoint
from rlaif_code.ppo.config import PPOConfig
from rlaif_code.ppo.dev import DevSelector, Selection, load_dev_set, prune_best
from rlaif_code.ppo.layout import PolicyWithValue, attention_cost, disable_dropout, packing_keeps_sequences_apart
from rlaif_code.ppo.logger import StepLogger
from rlaif_code.ppo.losses import AdaptiveKLController, FixedKLController, make_kl_controller
from rlaif_code.ppo.rewards import FeedbackScorer, feedback_scorer
from rlaif_code.ppo.rollout import Prompts, encode_prompts, load_prompts, load_reference_answers

RewardFn = Callable[[list[str], list[str]], "torch.Tensor"]


def make_accelerator(grad_accum: int, mixed_precision: str) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # `rlaif run` trains SFT and the reward model in this same process; their Trainer leaves the
    # process-wide AcceleratorState fixed to its own precision, and accelerate refuses a different one.
    # Only that state is reset (as TrainingArguments does): the distributed PartialState stays.
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(gradient_accumulation_steps=grad_accum, mixed_precision=mixed_precision)


def load_frozen_reward_model(path: str, policy_tokenizer: Any, device: torch.device,
                             dtype: torch.dtype) -> tuple[nn.Module, Any, bool]:
    """(reward model, its tokenizer, whether its tokenizer differs from the policy's).

    PPO always hands the reward model text (prompt + decoded answer), which `score_texts`
    encodes with the reward model's own tokenizer, exactly as in reward training; so a
    different tokenizer is supported by re-tokenizing, and only reported.
    """
    from rlaif_code.reward.model import check_tokenizers, load_reward_model

    model, tokenizer = load_reward_model(path, device=str(device))
    if model.config.num_labels != 1:
        raise InputError(f"reward model {path} has num_labels={model.config.num_labels}; PPO needs a scalar "
                         "score (num_labels=1, the output of the reward stage)")
    retokenize = check_tokenizers(policy_tokenizer, tokenizer, retokenize=True)
    return model.to(dtype=dtype), tokenizer, retokenize


def build_policy(cfg: PPOConfig, device: torch.device, frozen_dtype: torch.dtype) -> tuple[PolicyWithValue, Any,
                                                                                             nn.Module | None]:
    """(policy + value head, tokenizer, frozen reference policy or None with LoRA)."""
    from transformers import AutoModel

    from rlaif_code.core.models import load_causal_lm, resolve_model

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
    return PolicyWithValue(policy, value_backbone), tokenizer, ref_policy


def load_reward_sources(cfg: PPOConfig, reward_fn: RewardFn | None, tokenizer: Any, device: torch.device,
                        dtype: torch.dtype, say: Callable[[str], None]) -> tuple[Any, Any, FeedbackScorer | None]:
    """(reward model, its tokenizer, online feedback scorer) as `reward_source` asks; all None with a reward_fn."""
    reward_model = reward_tokenizer = feedback = None
    if reward_fn is None and cfg.reward_source != "model":
        feedback = feedback_scorer(cfg)
    if reward_fn is None and cfg.reward_source != "feedback":
        reward_model, reward_tokenizer, retokenize = load_frozen_reward_model(cfg.reward_model, tokenizer, device,
                                                                              dtype)
        if retokenize:
            say(f"{cfg.reward_model}: its tokenizer differs from the policy's; answers are decoded and "
                "re-tokenized with the reward model's own tokenizer")
    return reward_model, reward_tokenizer, feedback


@dataclass
class Setup:
    """Everything the PPO loop needs, built once by `setup`."""

    accelerator: Any
    model: nn.Module  # PolicyWithValue as Accelerate prepared it (DDP-wrapped under accelerate launch)
    unwrapped: PolicyWithValue
    optimizer: torch.optim.Optimizer
    ref_policy: nn.Module | None  # None with LoRA: the reference is the policy with its adapters disabled
    tokenizer: Any
    reward_fn: RewardFn | None  # given by the caller: it alone scores
    reward_model: nn.Module | None  # None when reward_fn scores, or reward_source is feedback
    reward_tokenizer: Any
    pack_tokens: int  # 0 when the architecture ignores packed position ids
    pair_cost: float
    prompts: Prompts
    kl_ctl: FixedKLController | AdaptiveKLController
    start_step: int  # the checkpoint resumed from (0: a fresh run)
    logger: StepLogger
    selector: DevSelector  # dev-set selection and the KL budget
    feedback: FeedbackScorer | None = None  # the online rubric score (reward_source feedback or model+feedback)
    stopped: tuple[int, str] | None = None  # (step, why) when the KL budget or patience ended the run early
    references: dict[str, list[int]] | None = None  # prompt -> reference answer ids, for the anchor (anchor_coef)


def setup(cfg: PPOConfig, reward_fn: RewardFn | None) -> Setup:
    """Models, optimizer, accelerator, reward model, prompts and the resume point, in an order
    (seeding, then model building) that a rerun repeats exactly."""
    from accelerate.utils import set_seed

    out_dir = Path(cfg.out_dir)
    prompt_texts = load_prompts(cfg)
    dev = load_dev_set(cfg)
    checkpoint = claim_checkpoints(out_dir, cfg)  # before the slow part: a foreign checkpoint fails fast

    bf16 = use_bf16(cfg.bf16)
    accelerator = make_accelerator(cfg.grad_accum, "bf16" if bf16 else "no")
    device = accelerator.device
    set_seed(cfg.seed + accelerator.process_index)
    frozen_dtype = torch.bfloat16 if bf16 else torch.float32

    model, tokenizer, ref_policy = build_policy(cfg, device, frozen_dtype)
    # fused: one kernel per step and no parameter-sized temporaries (lower peak memory than foreach)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate, eps=1e-5,
                                  fused=device.type in ("cpu", "cuda"))
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    reward_model, reward_tokenizer, feedback = load_reward_sources(cfg, reward_fn, tokenizer, device, frozen_dtype,
                                                                   accelerator.print)

    pack_tokens, pair_cost = cfg.pack_tokens, attention_cost(unwrapped.policy.config)
    if pack_tokens and not packing_keeps_sequences_apart(unwrapped.policy):
        accelerator.print(f"{cfg.policy}: this architecture ignores packed position ids; using padded rows")
        pack_tokens = 0
    prompts = encode_prompts(prompt_texts, tokenizer, cfg.max_prompt_tokens)
    references = load_reference_answers(cfg, tokenizer) if cfg.anchor_coef > 0 else None

    kl_ctl = make_kl_controller(cfg)
    start_step, selection_state = 0, None
    if checkpoint is not None:
        start_step, kl_ctl.value, selection_state = load_checkpoint(accelerator, checkpoint, model, optimizer)
        if start_step > cfg.total_steps:
            raise InputError(f"{checkpoint}: this run already went past total_steps={cfg.total_steps}; raise "
                             "total_steps or use a new out_dir")
        accelerator.print(f"resuming from {checkpoint} (step {start_step})")
    selection = Selection.from_dict(selection_state)
    if accelerator.is_main_process:
        drop_unfinished_saves(out_dir)
        # best/ folders of steps after the resume point will be redone; older ones are superseded
        prune_best(out_dir, keep_from=max(selection.best_step, 0), drop_after=start_step)
    logger = StepLogger(out_dir, start_step, cfg.log_every, accelerator.is_main_process)
    selector = DevSelector(cfg, dev, selection, out_dir, start_step, accelerator.is_main_process)
    return Setup(accelerator, model, unwrapped, optimizer, ref_policy, tokenizer, reward_fn, reward_model,
                 reward_tokenizer, pack_tokens, pair_cost,
                 prompts, kl_ctl, start_step, logger, selector, feedback, references=references)
