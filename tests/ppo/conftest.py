"""Fixtures of the PPO tests: prompts, a toy reward, and a tiny config factory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch

from rlaif_code.data.prompts import build_prompt
from rlaif_code.ppo import PPOConfig
from tiny import save_tiny_causal_lm

INSTRUCTIONS = ["Load a pretrained image classifier", "Segment the objects in a street photo",
                "Detect faces in a video frame", "Translate English text to French",
                "Classify the sound in an audio clip", "Estimate depth from a single image"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every PPO test runs on one torch thread (see tests/conftest.py)."""


@pytest.fixture
def instructions() -> list[str]:
    return list(INSTRUCTIONS)


@pytest.fixture
def write_prompts() -> Callable[[Path], Path]:
    """Write a prompts JSONL (one Gorilla prompt per instruction) to a path."""

    def write(path: Path, instructions: list[str] = INSTRUCTIONS) -> Path:
        path.write_text("".join(json.dumps({"prompt": build_prompt(i)}) + "\n" for i in instructions))
        return path

    return write


def _count_e(prompts: list[str], answers: list[str]) -> torch.Tensor:
    """Toy reward: how many times the letter 'e' appears in the answer."""
    return torch.tensor([float(a.count("e")) for a in answers])


@pytest.fixture
def count_e() -> Callable[[list[str], list[str]], torch.Tensor]:
    return _count_e


@pytest.fixture
def tiny_cfg(tmp_path: Path, write_prompts) -> Callable[..., PPOConfig]:
    """A factory of PPOConfigs on a tiny saved policy and six prompts under tmp_path; keywords override."""

    def make(**overrides) -> PPOConfig:
        policy = tmp_path / "policy"
        if not policy.exists():
            save_tiny_causal_lm(policy)
        prompts = tmp_path / "prompts.jsonl"
        if not prompts.exists():
            write_prompts(prompts)
        settings = dict(policy=str(policy), prompts_file=str(prompts), out_dir=str(tmp_path / "ppo"), total_steps=2,
                        batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=6, learning_rate=1e-3,
                        save_every=1, bf16="off", dev_every=0, kl_budget=None)  # dev selection: test_ppo_dev
        settings.update(overrides)
        return PPOConfig(**settings)

    return make


@pytest.fixture
def final_weights() -> Callable[[Path], dict[str, torch.Tensor]]:
    """The final model's weights of a PPO out_dir."""

    def load(out_dir: Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(out_dir / "model" / "model.safetensors")

    return load
