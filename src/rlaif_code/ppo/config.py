"""PPO's settings: one dataclass, checked as it is built (a bad value is a `ConfigError` naming its key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rlaif_code.core.config import ConfigError
from rlaif_code.core.fields import added_field
from rlaif_code.core.models import LoraSettings
from rlaif_code.core.training import Bf16


@dataclass
class PPOLoraSettings(LoraSettings):
    """SFT's LoRA settings with PPO's defaults. Dropout stays off: different masks in the rollout
    and the training pass would make the PPO ratio noisy (every other dropout is switched off too)."""

    dropout: float = 0.0  # LoRA dropout; non-zero makes the PPO ratio noisy
    # layers that get adapters; ["all-linear"] = every linear layer but the output head
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclass
class PPOConfig:
    """Notes on some settings.

    incomplete_answer_penalty: the reward model only saw complete SFT answers, so its score for a
    truncated one is an extrapolation, and PPO finds it: on the full TorchHub run, answers shrank
    from 140 to 42 tokens of domain + api_call while the score rose.
    rollout_logprobs: the sampler's log-probs (KV cache) equal a full pass up to rounding, which is
    larger under bf16. pack_tokens: architectures that ignore packed position ids fall back to padding.
    """

    # ppo: our loop (ppo/stage.py); grpo, rloo: TRL's GRPOTrainer / RLOOTrainer (ppo/trl_loop.py) with the
    # same rewards, penalties, dev-set selection, KL budget and outputs
    algorithm: Literal["ppo", "grpo", "rloo"] = "ppo"
    group_size: int = 4  # grpo, rloo: answers per prompt that share a baseline (batch_size is a multiple)
    policy: str = "runs/default/sft"  # M_SFT: a model directory (or any name models.resolve_model takes)
    reward_model: str = "runs/default/reward"  # M_reward: the reward stage's output (num_labels=1)
    # model: the reward model's logit (the paper); feedback: the rubric's tool questions asked of each
    # rollout online (ppo/rewards.py); model+feedback: the logit plus feedback_weight x the rubric score
    reward_source: Literal["model", "feedback", "model+feedback"] = "model"
    feedback_rubric: str | None = None  # the rubric of the feedback reward; None: the packaged default
    feedback_weight: float = 1.0  # model+feedback: the rubric score's weight beside the logit
    data_dir: str = "runs/default/data"  # a data stage output; its train.jsonl prompts are the PPO prompts
    data: str | None = None  # Gorilla data (the API database dev answers are matched in); None: $RLAIF_DATA
    # your API database (data.api_db, wired by `rlaif run`): dev answers and feedback rewards are matched in it
    # and hermetic execution stands in for its ids; None: the hub's own database from Gorilla's data
    api_db: str | None = added_field(None)
    prompts_file: str | None = None  # or a JSONL with a "prompt" field per line (overrides data_dir)
    out_dir: str = "runs/default/ppo"  # metrics, checkpoints and the final model go here
    total_steps: int = 200  # PPO iterations
    batch_size: int = 16  # rollouts per step (per process)
    mini_batch_size: int = 8  # rollouts per optimizer step
    grad_accum: int = 1  # micro-batches per minibatch (micro-batch = mini_batch_size / grad_accum)
    ppo_epochs: int = 4  # passes over each step's rollouts
    learning_rate: float = 1e-5  # AdamW learning rate
    max_new_tokens: int = 128  # longest answer sampled
    max_prompt_tokens: int = 512  # longer prompts are left out (and counted)
    temperature: float = 1.0  # sampling temperature; log-probs are taken under the same temperature
    # nucleus sampling; < 1 samples a truncated distribution while the loss uses the full one (a bias)
    top_p: float = 1.0
    gamma: float = 1.0  # discount over answer tokens
    lam: float = 0.95  # GAE lambda
    clip_range: float = 0.2  # PPO ratio clip
    clip_range_value: float = 0.2  # value clip around the rollout's values
    vf_coef: float = 0.1  # weight of the value loss
    kl_coef: float = 0.05  # KL penalty coefficient (the starting one when kl_mode is adaptive)
    kl_mode: Literal["fixed", "adaptive"] = "adaptive"  # adaptive: steer the coefficient towards kl_target
    kl_target: float = 1.0  # adaptive: target KL (nats per answer; PPOCoder's ~1), Ziegler et al. 2019
    # adaptive: episodes over which the coefficient may change by e^(+-0.2); small batches need a short one
    kl_horizon: int = 200
    # PPO stops, and says so, when the mean KL of the last 3 steps exceeds this (nats per answer); None: never
    kl_budget: float | None = 4.0
    whiten_rewards: bool = False  # standardise the scores over the (per-process) batch, before the penalties
    whiten_advantages: bool = True  # standardise advantages over the batch's answer tokens
    max_grad_norm: float = 1.0  # gradient clipping
    # supervised anchor (CodeRL, RLTF, InstructGPT's ptx): this weight x the mean token NLL of the step's
    # prompts' reference answers (data_dir's train.jsonl `target`) joins every PPO update; 0: off
    anchor_coef: float = 0.0
    # subtracted from the score of an answer that hit max_new_tokens without an end; None disables
    missing_eos_penalty: float | None = None
    # subtracted from the score of an answer lacking one of Gorilla's five fields; None disables
    incomplete_answer_penalty: float | None = None
    value_head: Literal["shared", "separate"] = "shared"  # value head on the policy's backbone, or on a copy
    lora: PPOLoraSettings = field(default_factory=PPOLoraSettings)  # train LoRA adapters instead of all weights
    # Dev-set selection (ppo/dev.py): every dev_every steps the policy answers data_dir's dev.jsonl
    # greedily; the output model is the best step by select_metric, the SFT model counting as step 0.
    dev_every: int = 10  # steps between dev evaluations; 0: no selection, the last step is the output
    dev_max_prompts: int | None = None  # the first N dev prompts; None: all
    dev_batch_size: int = 64  # dev answers in flight
    select_metric: Literal["exact_match", "accuracy", "exec"] = "exact_match"  # exec: the dev_exec_tier rate
    dev_exec_tier: Literal["none", "parse", "static", "run"] = "none"  # executability tier of the dev answers
    dev_exec_env: str | None = None  # exec env for dev_exec_tier; None: $RLAIF_EXEC_ENV, else the cache
    patience: int | None = None  # dev evaluations without a new best before PPO stops; None: never
    seed: int = 0  # the seed of prompts, sampling and shuffling
    save_every: int = 20  # steps between checkpoints (the last step is always saved)
    keep_checkpoints: int = 2  # checkpoints kept on disk
    log_every: int = 1  # steps between console / TensorBoard lines (metrics.jsonl gets every step)
    # tokens per row when forward passes pack sequences end to end (0: padded rows)
    pack_tokens: int = 512
    # generation: old log-probs and values from the sampler itself; recompute: one more exact pass
    rollout_logprobs: Literal["generation", "recompute"] = "generation"
    bf16: Bf16 = "auto"  # auto: bf16 mixed precision on a GPU that supports it or an AMX CPU

    # Budgets and logging: a resumed run may change them and still continue its checkpoints.
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({
        "total_steps", "save_every", "keep_checkpoints", "log_every", "out_dir", "patience", "dev_batch_size"})

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"ppo: {message}")

        for name in ("total_steps", "batch_size", "mini_batch_size", "grad_accum", "ppo_epochs", "max_new_tokens",
                     "max_prompt_tokens", "save_every", "log_every", "keep_checkpoints", "kl_horizon"):
            need(getattr(self, name) >= 1, f"'{name}' must be >= 1 (got {getattr(self, name)})")
        need(self.batch_size % self.mini_batch_size == 0,
             f"'batch_size' ({self.batch_size}) must be a multiple of 'mini_batch_size' ({self.mini_batch_size})")
        need(self.mini_batch_size % self.grad_accum == 0,
             f"'mini_batch_size' ({self.mini_batch_size}) must be a multiple of 'grad_accum' ({self.grad_accum})")
        need(self.pack_tokens >= 0, f"'pack_tokens' must be >= 0 (0 = padded rows; got {self.pack_tokens})")
        need(self.temperature > 0, f"'temperature' must be > 0 (PPO needs a sampling policy; got {self.temperature})")
        need(0 < self.top_p <= 1, f"'top_p' must be in (0, 1] (got {self.top_p})")
        need(self.algorithm in ("ppo", "grpo", "rloo"),
             f"'algorithm' = {self.algorithm!r} is not one of 'ppo', 'grpo', 'rloo'")
        if self.algorithm != "ppo":
            need(self.group_size >= 2, f"'group_size' must be >= 2 for {self.algorithm} (got {self.group_size})")
            need(self.batch_size % self.group_size == 0,
                 f"'batch_size' ({self.batch_size}) must be a multiple of 'group_size' ({self.group_size})")
            need(self.kl_mode == "fixed", f"'kl_mode' must be fixed for {self.algorithm}: TRL's trainer keeps "
                 "kl_coef (its beta) fixed; the KL budget still applies")
            for name in ("whiten_rewards", "anchor_coef"):
                need(not getattr(self, name), f"'{name}' is a PPO-only setting; {self.algorithm} normalises "
                     "rewards within each group of answers")
        need(self.anchor_coef >= 0, f"'anchor_coef' must be >= 0 (0: no supervised anchor; got {self.anchor_coef})")
        need(self.anchor_coef == 0 or not self.prompts_file,
             "'anchor_coef' needs reference answers: data_dir's train.jsonl, not prompts_file")
        need(self.kl_coef >= 0, f"'kl_coef' must be >= 0 (got {self.kl_coef})")
        need(self.kl_target > 0, f"'kl_target' must be > 0 (got {self.kl_target})")
        need(self.kl_budget is None or self.kl_mode == "fixed" or self.kl_budget > self.kl_target,
             f"'kl_budget' ({self.kl_budget}) must be above 'kl_target' ({self.kl_target}): the controller "
             "steers towards the target, the budget is where PPO stops")
        need(self.dev_every >= 0, f"'dev_every' must be >= 0 (0: no dev selection; got {self.dev_every})")
        need(self.select_metric != "exec" or self.dev_exec_tier != "none",
             "'select_metric' exec needs 'dev_exec_tier' parse, static or run")
        for name in ("dev_max_prompts", "dev_batch_size", "patience"):
            value = getattr(self, name)
            need(value is None or value >= 1, f"'{name}' must be >= 1 (got {value})")
        need(not (self.whiten_rewards and self.batch_size < 2), "'whiten_rewards' needs batch_size >= 2")
        # Built from Python, a config skips the loader's type checks; these once took other values (bf16: bools).
        for name, allowed in (("kl_mode", ("fixed", "adaptive")), ("value_head", ("shared", "separate")),
                              ("rollout_logprobs", ("generation", "recompute")), ("bf16", ("auto", "on", "off")),
                              ("reward_source", ("model", "feedback", "model+feedback"))):
            value = getattr(self, name)
            need(value in allowed, f"'{name}' = {value!r} is not one of {', '.join(map(repr, allowed))}")
