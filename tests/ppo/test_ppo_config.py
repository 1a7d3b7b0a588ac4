"""PPOConfig checks itself as it is built: a bad value is a ConfigError naming its key."""

from __future__ import annotations

import dataclasses

import pytest

from rlaif_code.core.artifacts import run_identity
from rlaif_code.core.config import ConfigError, load_config
from rlaif_code.ppo import PPOConfig


def test_defaults_are_valid():
    cfg = PPOConfig()
    assert cfg.bf16 == "auto"


def test_batch_sizes_must_divide():
    with pytest.raises(ConfigError, match=r"^ppo: 'batch_size' \(6\) must be a multiple of 'mini_batch_size' \(4\)$"):
        PPOConfig(batch_size=6, mini_batch_size=4)
    with pytest.raises(ConfigError, match=r"'mini_batch_size' \(4\) must be a multiple of 'grad_accum' \(3\)"):
        PPOConfig(batch_size=8, mini_batch_size=4, grad_accum=3)


@pytest.mark.parametrize("key, value", [
    ("total_steps", 0), ("batch_size", 0), ("mini_batch_size", 0), ("grad_accum", 0), ("ppo_epochs", 0),
    ("max_new_tokens", 0), ("max_prompt_tokens", 0), ("save_every", 0), ("log_every", 0), ("keep_checkpoints", 0),
    ("kl_horizon", 0), ("pack_tokens", -1), ("temperature", 0.0), ("top_p", 0.0), ("top_p", 1.5),
    ("kl_coef", -0.1), ("kl_target", 0.0), ("kl_mode", "pid"), ("value_head", "tied"),
    ("rollout_logprobs", "cached"), ("bf16", False), ("bf16", True), ("anchor_coef", -1.0),
])
def test_each_bad_value_is_a_config_error_naming_its_key(key, value):
    with pytest.raises(ConfigError, match=rf"^ppo: '{key}'"):
        PPOConfig(**{key: value})


def test_the_anchor_needs_the_data_stages_reference_answers():
    with pytest.raises(ConfigError, match="'anchor_coef' needs reference answers"):
        PPOConfig(anchor_coef=0.5, prompts_file="prompts.jsonl")


def test_whiten_rewards_needs_two_rollouts():
    with pytest.raises(ConfigError, match="'whiten_rewards' needs batch_size >= 2"):
        PPOConfig(whiten_rewards=True, batch_size=1, mini_batch_size=1)


def test_the_loader_reports_the_key_and_its_source():
    with pytest.raises(ConfigError, match=r"command line: .*'batch_size' \(6\) must be a multiple"):
        load_config(PPOConfig, None, ["batch_size=6", "mini_batch_size=4"])
    assert load_config(PPOConfig, None, ["bf16='off'"]).bf16 == "off"


def test_resumable_fields_are_fields_and_leave_the_run_identity():
    names = {f.name for f in dataclasses.fields(PPOConfig)}
    assert PPOConfig.RESUMABLE <= names
    identity = run_identity(PPOConfig())
    assert not PPOConfig.RESUMABLE & set(identity)
    assert {"policy", "lora", "value_head", "learning_rate", "seed"} <= set(identity)
