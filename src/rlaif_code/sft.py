"""SFT stage: fine-tune the base model on Gorilla prompts and answers (M_SFT).

Design choices:
- TRL's `SFTTrainer` does the work. Rows become TRL's prompt-completion format
  (`prompt` = "###Instruction: ...###Output:", `completion` = the answer), so TRL appends
  eos to the completion and masks the prompt out of the loss: the model is trained only on
  the answer and on stopping after it. The pad token is distinct from eos (see
  `rlaif_code.models`), so padding never hides that final eos.
- Checkpoints go to `out_dir/checkpoints` every `save_steps` and at the end; a rerun resumes
  from the last one (after a kill, or with a larger `max_steps`/`epochs` budget). Resuming
  is refused when settings other than the budget changed, because the checkpoint would
  then belong to a different run.
- The final model is one plain directory (LoRA adapters merged), so every later stage
  loads M_SFT the same way whether or not LoRA was used; `stage.json` (written last)
  carries the config and the metrics.
- bf16 "auto" means mixed precision on a GPU only: on CPU bf16 is slower than float32.
"""

from __future__ import annotations

import json
import math
import shutil
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlaif_code.artifacts import (
    STAGE_FILE,
    InputError,
    atomic_write_json,
    iter_jsonl,
    read_json,
    read_stage_record,
    stage_is_done,
    write_stage_record,
)
from rlaif_code.config import config_hash, to_dict
from rlaif_code.models import LoraSettings

CHECKPOINTS = "checkpoints"
RUN_IDENTITY = "run_identity.json"  # the non-budget config the checkpoints belong to


@dataclass
class SFTConfig:
    model: str = "smollm2-135m"  # embedded name, model directory, .gguf file or Hugging Face id
    data_dir: str = "runs/default/data"  # output of the data stage
    out_dir: str = "runs/default/sft"
    max_length: int = 512  # tokens of prompt + answer; longer examples are cut at the end
    max_examples: int | None = None  # first N training rows, for budgets
    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 8
    grad_accum: int = 1
    lora: LoraSettings = field(default_factory=LoraSettings)
    bf16: Literal["auto", "on", "off"] = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0
    save_steps: int = 200
    save_total_limit: int = 1
    keep_checkpoints: bool = True  # False: delete them once the final model is saved
    logging_steps: int = 10
    report_to: Literal["none", "tensorboard", "wandb"] = "tensorboard"  # TensorBoard events go to out_dir/tb


# Fields that only set how long to train or how to log: changing them keeps a checkpoint usable.
_BUDGET_FIELDS = {"epochs", "max_steps", "save_steps", "save_total_limit", "keep_checkpoints",
                  "logging_steps", "report_to"}


def load_sft_rows(data_dir: str | Path, max_examples: int | None = None) -> list[dict[str, str]]:
    """Prompt-completion rows from the data stage's train.jsonl (errors name file:line)."""
    path = Path(data_dir) / "train.jsonl"
    rows = []
    for lineno, row in iter_jsonl(path):
        for key in ("prompt", "target"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise InputError(f"{path}:{lineno}: missing or empty string field '{key}' "
                                 "(expected rows written by the data stage)")
        rows.append({"prompt": row["prompt"], "completion": row["target"]})
        if max_examples is not None and len(rows) >= max_examples:
            break
    if not rows:
        raise InputError(f"{path}: no training examples")
    return rows


def use_bf16(setting: str) -> bool:
    import torch

    if setting == "on":
        return True
    if setting == "off":
        return False
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _run_identity(cfg: SFTConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(cfg).items() if k not in _BUDGET_FIELDS}


def resumable_checkpoint(ckpt_dir: str | Path, identity: dict[str, Any]) -> str | None:
    """The last checkpoint in `ckpt_dir`, after checking it was made with settings `identity`."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    last = get_last_checkpoint(str(ckpt_dir))
    if last is None:
        return None
    identity_file = ckpt_dir / RUN_IDENTITY
    stored = read_json(identity_file) if identity_file.is_file() else None
    if stored != identity:
        changed = sorted(k for k in set(identity) | set(stored or {})
                         if (stored or {}).get(k) != identity.get(k))
        raise InputError(f"{ckpt_dir}: checkpoints were made with different settings ({', '.join(changed)}); "
                         "use another out_dir or delete the checkpoints to start over")
    return last


def record_checkpoint_identity(ckpt_dir: str | Path, identity: dict[str, Any]) -> None:
    atomic_write_json(Path(ckpt_dir) / RUN_IDENTITY, identity)


def last_checkpoint(out_dir: str | Path, cfg: SFTConfig) -> str | None:
    return resumable_checkpoint(Path(out_dir) / CHECKPOINTS, _run_identity(cfg))


@contextmanager
def tensorboard_dir(log_dir: Path):
    """transformers' TensorBoard callback reads its folder from the environment while the Trainer is
    built; without it, events land under checkpoints/runs/<date_host>, away from PPO's `tb/`."""
    previous = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(log_dir)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = previous


def build_trainer(cfg: SFTConfig) -> Any:
    """An `SFTTrainer` with the dataset prepared (tokenized, prompt masked); `run` trains it."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from rlaif_code.models import load_causal_lm

    rows = load_sft_rows(cfg.data_dir, cfg.max_examples)
    model, tokenizer = load_causal_lm(cfg.model, dtype="float32", device="cpu", padding_side="right")
    out = Path(cfg.out_dir)
    bf16 = use_bf16(cfg.bf16)
    args = TRLSFTConfig(
        output_dir=str(out / CHECKPOINTS),
        max_length=cfg.max_length,
        completion_only_loss=True,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,  # transformers reads a float below 1 as a fraction of the steps
        weight_decay=cfg.weight_decay,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        activation_checkpointing=cfg.gradient_checkpointing,
        bf16=bf16,
        seed=cfg.seed,
        data_seed=cfg.seed,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        report_to=cfg.report_to,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      peft_config=cfg.lora.peft_config() if cfg.lora.enabled else None)


def run(cfg: SFTConfig) -> dict[str, Any]:
    from rlaif_code.models import save_model

    out = Path(cfg.out_dir)
    if stage_is_done(out, "sft", cfg):
        record = read_stage_record(out) or {}
        return {**record.get("metrics", {}), "skipped": True}
    if cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise InputError("batch_size and grad_accum must be at least 1")
    if not 0.0 <= cfg.warmup_ratio < 1.0:
        raise InputError(f"warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    resume_from = last_checkpoint(out, cfg)
    # A record of an earlier, different run must not vouch for files this run is replacing.
    (out / STAGE_FILE).unlink(missing_ok=True)
    with tensorboard_dir(out / "tb"):
        trainer = build_trainer(cfg)
    record_checkpoint_identity(out / CHECKPOINTS, _run_identity(cfg))
    tokens_before = 0
    if resume_from:
        tokens_before = int(json.loads((Path(resume_from) / "trainer_state.json").read_text())
                            .get("num_input_tokens_seen", 0))
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - start
    state = trainer.state
    tokens = int(state.num_input_tokens_seen) - tokens_before
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    save_model(trainer.model, trainer.processing_class, out)
    if not cfg.keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    metrics = {
        "train_loss": float(result.training_loss) if not math.isnan(result.training_loss) else None,
        "last_logged_loss": losses[-1] if losses else None,
        "global_step": int(state.global_step),
        "resumed_from": resume_from,
        "n_examples": len(trainer.train_dataset),
        "train_tokens": tokens,
        "tokens_per_s": tokens / wall if wall > 0 else None,
        "wall_time_s": wall,
        "trainable_parameters": trainable,
        "lora": cfg.lora.enabled,
        "bf16": use_bf16(cfg.bf16),
        "config_hash": config_hash(cfg),
    }
    write_stage_record(out, "sft", cfg, metrics=metrics, outputs=["model.safetensors", "config.json"])
    return metrics

