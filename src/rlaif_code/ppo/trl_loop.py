"""GRPO and RLOO through TRL's trainers (`algorithm: grpo | rloo`), on PPO's terms.

TRL does the RL: sampling `group_size` answers per prompt, the group baseline, the clipped loss
and the KL to the reference (its `beta` = `kl_coef`, fixed). What stays ours, so that one config
compares the algorithms: the reward (`rewards.source_scores`: the reward model's logit, the online
rubric, or both, less the missing-eos and incomplete-answer penalties), the dev-set selection with
the SFT model as step 0, the KL budget and patience (`dev.DevSelector`), metrics.jsonl / dev.jsonl,
and the outputs: `model/` (the selected weights, carrying the config) and `stage.json`.

Steps. One step here is one batch of `batch_size` rollouts, as in our PPO: TRL's `steps_per_generation`
= batch_size / mini_batch_size optimizer steps per batch, each repeated `ppo_epochs` times
(`num_iterations`), so `total_steps`, `dev_every` and `save_every` mean the same under every algorithm.

KL. TRL logs the mean per-token KL, GRPO with the k3 estimator (never negative), RLOO with k1
(log p - log p_ref: unbiased, but one batch can read below zero); the budget reads nats per answer,
that times the mean answer length. Checkpoints are TRL's (`trl/checkpoint-N`, resumed by the Trainer), each with the
selection state beside it (`selection.json`), so a killed run continues its selection too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from rlaif_code.core.artifacts import InputError, atomic_write_json, claim_run
from rlaif_code.core.training import use_bf16
from rlaif_code.ppo.config import PPOConfig
from rlaif_code.ppo.dev import DevSelector, Selection, load_dev_set, prune_best, write_outputs
from rlaif_code.ppo.logger import StepLogger
from rlaif_code.ppo.rewards import source_scores
from rlaif_code.ppo.rollout import encode_prompts, incomplete_answers, load_prompts
from rlaif_code.ppo.setup import RewardFn, load_reward_sources

TRL_DIR = "trl"
SELECTION_FILE = "selection.json"


def trl_classes(algorithm: str) -> tuple[type, type]:
    """(config class, trainer class) of `algorithm`; a TRL without them is an error naming the key."""
    import trl

    names = {"grpo": ("GRPOConfig", "GRPOTrainer"), "rloo": ("RLOOConfig", "RLOOTrainer")}[algorithm]
    missing = [name for name in names if not hasattr(trl, name)]
    if missing:
        raise InputError(f"ppo.algorithm {algorithm}: the installed trl {trl.__version__} has no "
                         f"{', '.join(missing)}; install a TRL that has it, or set ppo.algorithm: ppo")
    return getattr(trl, names[0]), getattr(trl, names[1])


def updates_per_step(cfg: PPOConfig) -> int:
    """Optimizer steps TRL takes per batch of rollouts."""
    return cfg.batch_size // cfg.mini_batch_size * cfg.ppo_epochs


def trainer_config(cfg: PPOConfig, config_class: type) -> Any:
    return config_class(
        output_dir=str(Path(cfg.out_dir) / TRL_DIR),
        max_steps=cfg.total_steps * updates_per_step(cfg),
        per_device_train_batch_size=cfg.mini_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        steps_per_generation=cfg.batch_size // cfg.mini_batch_size,
        num_iterations=cfg.ppo_epochs,
        num_generations=cfg.group_size,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.kl_coef,
        epsilon=cfg.clip_range,
        learning_rate=cfg.learning_rate,
        max_grad_norm=cfg.max_grad_norm,
        lr_scheduler_type="constant",
        bf16=use_bf16(cfg.bf16),
        use_cpu=not torch.cuda.is_available(),
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=updates_per_step(cfg),
        save_strategy="steps",
        save_steps=cfg.save_every * updates_per_step(cfg),
        save_total_limit=cfg.keep_checkpoints,
        report_to="none",
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )


def reward_function(cfg: PPOConfig, reward_fn: RewardFn | None, tokenizer: Any) -> Any:
    """TRL's reward function: our score of each (prompt, answer), less the penalties."""
    from contextlib import nullcontext

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where TRL trains
    reward_model, reward_tokenizer, feedback = load_reward_sources(
        cfg, reward_fn, tokenizer, device, torch.bfloat16 if use_bf16(cfg.bf16) else torch.float32, print)
    eos = tokenizer.eos_token_id

    def score(prompts: list[str], completions: list[str], completion_ids: list[list[int]], **_: Any) -> list[float]:
        scores = source_scores(cfg, reward_fn, reward_model, reward_tokenizer, feedback, prompts, completions,
                               cfg.mini_batch_size, device, nullcontext).cpu()
        if cfg.missing_eos_penalty is not None:
            ended = torch.tensor([bool(ids) and ids[-1] == eos for ids in completion_ids])
            scores -= cfg.missing_eos_penalty * (~ended).float()
        if cfg.incomplete_answer_penalty is not None:
            scores -= cfg.incomplete_answer_penalty * torch.tensor(incomplete_answers(completions)).float()
        return scores.tolist()

    score.__name__ = f"rlaif_{cfg.reward_source}"  # TRL names its reward columns after the function
    return score


def selection_callback(cfg: PPOConfig, selector: DevSelector, logger: StepLogger, tokenizer: Any) -> Any:
    """Dev-set selection, the KL budget and metrics.jsonl at the end of each batch of rollouts."""
    from transformers import TrainerCallback

    per_step = updates_per_step(cfg)
    out_dir = Path(cfg.out_dir)

    class Selecting(TrainerCallback):
        def __init__(self) -> None:
            self.stopped: tuple[int, str] | None = None
            self.started = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   model: Any = None, **_: Any) -> None:
            if not logs or state.global_step % per_step or "reward" not in logs:
                return
            step = state.global_step // per_step
            length = float(logs.get("completions/mean_length", 0.0))
            kl = float(logs.get("kl", 0.0)) * length  # TRL's per-token mean -> nats per answer
            now = time.perf_counter()
            logger.log(step, {"reward_mean": float(logs["reward"]), "reward_std": float(logs.get("reward_std", 0.0)),
                              "kl": kl, "kl_coef": cfg.kl_coef, "response_length": length,
                              "entropy": float(logs.get("entropy", float("nan"))),
                              "ended_fraction": 1.0 - float(logs.get("completions/clipped_ratio", 0.0)),
                              "step_seconds": now - self.started})
            self.started = now
            stop = selector.after_step(step, kl, model, tokenizer, torch_autocast(cfg))
            if stop:
                print(f"{cfg.algorithm} stops at step {step}: {stop}", flush=True)
                self.stopped = (step, stop)
                control.should_training_stop = True
                control.should_save = True

        def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            checkpoint = out_dir / TRL_DIR / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                atomic_write_json(checkpoint / SELECTION_FILE, selector.selection.to_dict())
                prune_best(out_dir, keep_from=max(selector.selection.best_step, 0))

    return Selecting()


def torch_autocast(cfg: PPOConfig) -> Any:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16(cfg.bf16))


def resume_point(cfg: PPOConfig) -> tuple[Path | None, int, dict[str, Any] | None]:
    """(TRL checkpoint to resume, its step in batches of rollouts, its selection state)."""
    from transformers.trainer_utils import get_last_checkpoint

    root = Path(cfg.out_dir) / TRL_DIR
    last = get_last_checkpoint(str(root)) if root.is_dir() else None
    claim_run(root, cfg, resuming=last is not None)
    if last is None:
        return None, 0, None
    last_path = Path(last)
    step = int(last_path.name.rsplit("-", 1)[1]) // updates_per_step(cfg)
    state_path = last_path / SELECTION_FILE
    return last_path, step, json.loads(state_path.read_text()) if state_path.is_file() else None


def run_trl(cfg: PPOConfig, reward_fn: RewardFn | None = None) -> dict[str, Any]:
    """GRPO or RLOO from M_SFT with PPO's rewards and selection; the stage's outputs as PPO writes them."""
    from datasets import Dataset

    from rlaif_code.core.models import load_causal_lm

    config_class, trainer_class = trl_classes(cfg.algorithm)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    policy, tokenizer = load_causal_lm(cfg.policy, dtype="float32", device="cpu", padding_side="left")
    prompts = encode_prompts(load_prompts(cfg), tokenizer, cfg.max_prompt_tokens)
    checkpoint, start_step, selection_state = resume_point(cfg)
    if start_step > cfg.total_steps:
        raise InputError(f"{checkpoint}: this run already went past total_steps={cfg.total_steps}; raise "
                         "total_steps or use a new out_dir")
    selection = Selection.from_dict(selection_state)
    prune_best(out_dir, keep_from=max(selection.best_step, 0), drop_after=start_step)
    logger = StepLogger(out_dir, start_step, cfg.log_every, True)
    selector = DevSelector(cfg, load_dev_set(cfg), selection, out_dir, start_step, True)
    if start_step == 0:  # the SFT model is step 0: RL can never hand back worse
        selector.after_step(0, None, policy, tokenizer, torch_autocast(cfg))
    callback = selection_callback(cfg, selector, logger, tokenizer)
    peft_config = cfg.lora.peft_config() if cfg.lora.enabled else None
    trainer = trainer_class(model=policy, reward_funcs=reward_function(cfg, reward_fn, tokenizer),
                            args=trainer_config(cfg, config_class),
                            train_dataset=Dataset.from_dict({"prompt": prompts.texts}), processing_class=tokenizer,
                            callbacks=[callback], peft_config=peft_config)
    if not selector.selection.stopped:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    logger.close()
    selector.close()

    stopped = callback.stopped or ((start_step, selector.selection.stopped) if selector.selection.stopped else None)
    last_step = stopped[0] if stopped else cfg.total_steps
    result: dict[str, Any] = {
        "algorithm": cfg.algorithm,
        "steps": last_step,
        "stopped": stopped[1] if stopped else None,
        "selected_step": max(selection.best_step, 0) if selector.dev is not None else last_step,
        "selected_dev_value": selection.best_value if selection.best_step >= 0 else None,
        "select_metric": cfg.select_metric if selector.dev is not None else None,
        "resumed_from_step": start_step,
        "prompts": len(prompts.texts),
        "prompts_too_long": prompts.too_long,
        "kl_coef": cfg.kl_coef,
    }
    write_outputs(cfg, out_dir, selector.selection if selector.dev is not None else None, trainer.model, tokenizer,
                  result)
    return result
