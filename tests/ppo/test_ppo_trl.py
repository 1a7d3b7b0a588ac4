"""GRPO and RLOO through TRL's real trainers, with our rewards, dev-set selection and outputs (tiny model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlaif_code.core.artifacts import read_jsonl, read_stage_record
from rlaif_code.core.config import ConfigError
from rlaif_code.ppo import PPOConfig, run
from tiny import make_data_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, gorilla_data: Path) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("data"), gorilla_data, max_train=8, dev_fraction=0.25)


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_trl_algorithms_learn_a_toy_reward_with_dev_selection(tiny_cfg, count_e, data_dir: Path,
                                                             algorithm: str) -> None:
    cfg = tiny_cfg(algorithm=algorithm, kl_mode="fixed", data_dir=str(data_dir), prompts_file=None, total_steps=2,
                   batch_size=4, mini_batch_size=2, group_size=2, dev_every=1, max_new_tokens=6)
    result = run(cfg, reward_fn=count_e)
    out = Path(cfg.out_dir)
    steps = read_jsonl(out / "metrics.jsonl")
    dev = read_jsonl(out / "dev.jsonl")
    assert [r["step"] for r in steps] == [1, 2]
    if algorithm == "grpo":  # GRPO logs k3 (never negative, up to rounding); RLOO logs k1, unbiased but signed
        assert all(r["kl"] > -1e-6 for r in steps)
    assert [r["step"] for r in dev] == [0, 1, 2]  # the SFT model is step 0
    best = max(dev, key=lambda r: (r["exact_match"], -r["step"]))  # a tie keeps the earlier step
    assert result["algorithm"] == algorithm and result["selected_step"] == best["step"]
    assert read_stage_record(out / "model")["config"]["algorithm"] == algorithm
    assert (out / "model" / "model.safetensors").is_file()
    assert run(cfg, reward_fn=count_e)["skipped"]


def test_a_stopped_trl_run_resumes_from_its_checkpoint_and_selection(tiny_cfg, count_e, data_dir: Path) -> None:
    """A run stopped after step 1 (as a kill after its checkpoint leaves it) continues at step 2 with
    the dev log and the best-so-far it had, instead of starting over."""
    settings = dict(algorithm="rloo", kl_mode="fixed", data_dir=str(data_dir), prompts_file=None, batch_size=4,
                    mini_batch_size=2, group_size=2, dev_every=1, save_every=1, max_new_tokens=6)
    first = run(tiny_cfg(total_steps=1, **settings), reward_fn=count_e)
    assert first["steps"] == 1
    cfg = tiny_cfg(total_steps=2, **settings)  # total_steps may change on resume (PPOConfig.RESUMABLE)
    result = run(cfg, reward_fn=count_e)
    out = Path(cfg.out_dir)
    assert result["resumed_from_step"] == 1
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    dev = read_jsonl(out / "dev.jsonl")
    assert [r["step"] for r in dev] == [0, 1, 2]
    assert result["selected_step"] == max(dev, key=lambda r: (r["exact_match"], -r["step"]))["step"]


def test_the_kl_budget_stops_a_trl_run(tiny_cfg, count_e, data_dir: Path) -> None:
    cfg = tiny_cfg(algorithm="grpo", kl_mode="fixed", kl_budget=1e-9, kl_target=1e-10, data_dir=str(data_dir),
                   prompts_file=None, total_steps=3, batch_size=4, mini_batch_size=2, group_size=2, dev_every=0,
                   learning_rate=5e-2)
    result = run(cfg, reward_fn=count_e)
    assert result["stopped"].startswith("KL budget") and result["steps"] < 3


@pytest.mark.parametrize("settings, message", [
    (dict(algorithm="grpo", kl_mode="adaptive"), "'kl_mode' must be fixed for grpo"),
    (dict(algorithm="rloo", kl_mode="fixed", batch_size=6, mini_batch_size=2, group_size=4),
     r"'batch_size' \(6\) must be a multiple of 'group_size' \(4\)"),
    (dict(algorithm="grpo", kl_mode="fixed", anchor_coef=0.1), "'anchor_coef' is a PPO-only setting"),
    (dict(algorithm="a2c"), "'algorithm' = 'a2c'"),
])
def test_bad_algorithm_settings_name_their_key(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PPOConfig(**settings)
