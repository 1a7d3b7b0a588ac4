"""Checkpoints: `checkpoints/step-NNNNNN/` under out_dir, each appearing atomically.

A checkpoint holds the trainable weights, the optimizer, every process's RNG state, the KL
coefficient, the dev-set selection's state and the step, so a resumed run continues exactly as
an unbroken one would. The folder belongs to one run (`claim_run`): a resume may change only `PPOConfig.RESUMABLE`.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from rlaif_code.core.artifacts import InputError, atomic_write_json, claim_run
from rlaif_code.core.config import to_dict
from rlaif_code.core.training import CHECKPOINTS
from rlaif_code.ppo.config import PPOConfig


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}


def latest_checkpoint(out_dir: Path) -> Path | None:
    root = out_dir / CHECKPOINTS
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and (p / "state.pt").is_file())
    return done[-1] if done else None


def claim_checkpoints(out_dir: Path, cfg: PPOConfig) -> Path | None:
    """The latest checkpoint to resume from (None: start afresh), refused (`InputError`) when a run
    of another identity made it; the folder is claimed for `cfg` either way."""
    checkpoint = latest_checkpoint(out_dir)
    claim_run(out_dir / CHECKPOINTS, cfg, resuming=checkpoint is not None)
    return checkpoint


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
                    kl_coef: float, cfg: PPOConfig, keep: int, selection: dict[str, Any] | None = None) -> Path:
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
                    "optimizer": optimizer.state_dict(), "kl_coef": kl_coef, "selection": selection,
                    "config": to_dict(cfg)}, tmp / "state.pt")
        atomic_write_json(tmp / "checkpoint.json", {"step": step, "kl_coef": kl_coef, "selection": selection,
                                                    "config": to_dict(cfg)})
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


def load_checkpoint(accelerator: Any, path: Path, model: nn.Module,
                    optimizer: Any) -> tuple[int, float, dict[str, Any] | None]:
    """Restore weights, optimizer and this process's RNG from `path`; (step, KL coefficient, selection)."""
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
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
    return int(state["step"]), float(state["kl_coef"]), state.get("selection")


def drop_unfinished_saves(out_dir: Path) -> None:
    """Remove what a save killed before its rename left behind (main process only)."""
    for stale in (out_dir / CHECKPOINTS).glob(".step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
