"""Training plumbing the SFT, reward and PPO stages share.

- `CHECKPOINTS`: the folder under a stage's `out_dir` that holds its checkpoints.
- `Bf16`/`use_bf16`: the one precision setting; "auto" is bf16 mixed precision where it pays
  (`precision.bf16_pays`: a GPU that supports it, or a CPU with AMX) and float32 elsewhere.
- `tensorboard_dir`: TensorBoard events of every stage go to `out_dir/tb`.
- `resumable_checkpoint`: a Trainer's last checkpoint, only if it belongs to this run
  (`artifacts.run_identity`: the same config up to the fields its class lists as `RESUMABLE`).
- `process_state`: which process this is under `accelerate launch` (data parallel), before any
  Trainer exists, so that only the main process writes a stage's final files.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

from rlaif_code.core.artifacts import claim_run
from rlaif_code.core.precision import bf16_pays

CHECKPOINTS = "checkpoints"
TENSORBOARD = "tb"

Bf16 = Literal["auto", "on", "off"]


def use_bf16(setting: Bf16) -> bool:
    import torch

    if setting == "on":
        return True
    if setting == "off":
        return False
    return bf16_pays("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def tensorboard_dir(log_dir: str | Path) -> Iterator[None]:
    """transformers' TensorBoard callback reads its folder from the environment while the Trainer
    is built; without this, events land under checkpoints/runs/<date_host>, away from PPO's `tb/`."""
    previous = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(log_dir)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = previous


def process_state() -> Any:
    """accelerate's `PartialState`: this process's index and the number of processes (1 unless started
    by `accelerate launch` or torchrun). Reads `ACCELERATE_USE_CPU` as `TrainingArguments` does, so that
    processes on a machine without GPUs join one gloo group; the Trainer reuses the same group."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def resumable_checkpoint(ckpt_dir: str | Path, cfg: Any) -> str | None:
    """The last Trainer checkpoint in `ckpt_dir` (None if there is none), after checking that it
    was made by this run; the folder is claimed for `cfg` either way."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = Path(ckpt_dir)
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    claim_run(ckpt_dir, cfg, resuming=last is not None)
    return last


def trainer_arguments(cfg: Any, output_dir: str | Path) -> dict[str, Any]:
    """`TrainingArguments` keywords from the fields SFT and reward configs share (epochs, max_steps,
    learning_rate, weight_decay, warmup_ratio, batch_size, grad_accum, bf16, seed, save_steps,
    save_total_limit, logging_steps, report_to)."""
    import torch

    return dict(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # transformers reads a float below 1 as a fraction of the steps
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        bf16=use_bf16(cfg.bf16),
        use_cpu=not torch.cuda.is_available(),  # else transformers refuses bf16 on a CPU
        seed=cfg.seed,
        data_seed=cfg.seed,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        report_to=cfg.report_to,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
