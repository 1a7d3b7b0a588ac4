"""SFT stage: fine-tune the base model on Gorilla prompts and answers (M_SFT).

Design choices:
- TRL's `SFTTrainer` does the work. Rows become TRL's prompt-completion format
  (`prompt` = "###Instruction: ...###Output:", `completion` = the answer), so TRL appends
  eos to the completion and masks the prompt out of the loss: the model is trained only on
  the answer and on stopping after it. The pad token is distinct from eos (see
  `rlaif_code.core.models`), so padding never hides that final eos.
- Checkpoints go to `out_dir/checkpoints` every `save_steps` and at the end; a rerun resumes
  from the last one (after a kill, or with a larger `max_steps`/`epochs` budget). Resuming
  is refused when settings other than the budget changed, because the checkpoint would
  then belong to a different run.
- The final model is one plain directory (LoRA adapters merged), so every later stage
  loads M_SFT the same way whether or not LoRA was used; `stage.json` (written last)
  carries the config and the metrics.
- bf16 "auto" means mixed precision where it pays: a GPU, or a CPU with AMX (2.4x float32 there);
  elsewhere on CPU bf16 is slower than float32.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from rlaif_code.core.artifacts import STAGE_FILE, InputError, finished_result, iter_jsonl, write_stage_record
from rlaif_code.core.config import check_at_least, check_fraction, config_hash
from rlaif_code.core.fields import added_field
from rlaif_code.core.models import LoraSettings
from rlaif_code.core.training import (
    CHECKPOINTS,
    TENSORBOARD,
    Bf16,
    process_state,
    resumable_checkpoint,
    tensorboard_dir,
    trainer_arguments,
    use_bf16,
)


@dataclass
class SFTConfig:
    model: str = "smollm2-135m"  # the base model: embedded name, model directory, .gguf file or Hugging Face id
    data_dir: str = "runs/default/data"  # the data stage's output; its train.jsonl is trained on
    out_dir: str = "runs/default/sft"  # where the fine-tuned model (M_SFT), its checkpoints and metrics go
    max_length: int = 512  # tokens of prompt + answer; longer examples are cut at the end
    max_examples: int | None = None  # first N training rows, for budgets
    epochs: float = 1.0  # passes over the training rows (fractions allowed)
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    learning_rate: float = 5e-5  # peak learning rate of AdamW (linear decay to 0)
    warmup_ratio: float = 0.0  # share of the steps over which the learning rate rises from 0
    weight_decay: float = 0.0  # AdamW weight decay
    batch_size: int = 8  # rows per forward pass
    grad_accum: int = 1  # forward passes per optimizer step (effective batch: batch_size * grad_accum)
    lora: LoraSettings = field(default_factory=LoraSettings)  # LoRA adapters instead of full fine-tuning
    bf16: Bf16 = "auto"  # bf16 mixed precision: auto (on a GPU that supports it or an AMX CPU), on or off
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower
    seed: int = 0  # seeds training (data order, dropout)
    save_steps: int = 200  # optimizer steps between checkpoints (an interrupted run resumes from the last)
    save_total_limit: int = 1  # checkpoints kept on disk
    keep_checkpoints: bool = True  # False: delete them once the final model is saved
    logging_steps: int = 10  # optimizer steps between logged losses
    report_to: Literal["none", "tensorboard", "wandb"] = "tensorboard"  # TensorBoard events go to out_dir/tb
    # Batches of rows of about the same length (transformers' LengthGroupedSampler, seeded) instead of random
    # ones: the padding a batch computes on falls from ~39% of the tokens to ~1% on HuggingFace's long answers
    group_by_length: bool = added_field(False)

    # Fields that only set how long to train or how to log: changing them keeps a checkpoint usable.
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({
        "epochs", "max_steps", "save_steps", "save_total_limit", "keep_checkpoints", "logging_steps", "report_to"})

    def __post_init__(self) -> None:
        check_at_least(self, 1, "batch_size", "grad_accum", "max_length", "max_examples", "max_steps", "save_steps",
                       "save_total_limit", "logging_steps")
        check_fraction(self, "warmup_ratio")


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


def build_trainer(cfg: SFTConfig) -> Any:
    """An `SFTTrainer` with the dataset prepared (tokenized, prompt masked); `run` trains it."""
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from rlaif_code.core.models import load_causal_lm

    rows = load_sft_rows(cfg.data_dir, cfg.max_examples)
    model, tokenizer = load_causal_lm(cfg.model, dtype="float32", device="cpu", padding_side="right")
    args = TRLSFTConfig(**trainer_arguments(cfg, Path(cfg.out_dir) / CHECKPOINTS), max_length=cfg.max_length,
                        completion_only_loss=True, activation_checkpointing=cfg.gradient_checkpointing,
                        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
                        include_num_input_tokens_seen="non_padding")
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      peft_config=cfg.lora.peft_config() if cfg.lora.enabled else None)


def run(cfg: SFTConfig) -> dict[str, Any]:
    from rlaif_code.core.models import save_model

    out = Path(cfg.out_dir)
    if (done := finished_result(out, "sft", cfg)) is not None:
        return done
    processes = process_state()
    # Under accelerate launch: every process has looked at out_dir (and `rlaif run --only` has
    # emptied it in each) before any writes to it.
    processes.wait_for_everyone()
    resume_from = resumable_checkpoint(out / CHECKPOINTS, cfg)
    if processes.is_main_process:
        # A record of an earlier, different run must not vouch for files this run is replacing.
        (out / STAGE_FILE).unlink(missing_ok=True)
    with tensorboard_dir(out / TENSORBOARD):
        trainer = build_trainer(cfg)
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
    if trainer.is_world_process_zero():  # one writer; the other processes wait for it
        save_model(trainer.model, trainer.processing_class, out)
        if not cfg.keep_checkpoints:
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        write_stage_record(out, "sft", cfg, metrics=metrics, outputs=["model.safetensors", "config.json"])
    trainer.accelerator.wait_for_everyone()
    return metrics

