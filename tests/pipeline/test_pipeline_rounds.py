"""Iterated RLAIF (`rounds: 2`) on the tiny model: round 2's stages sample with round 1's selected
policy, refit the reward model on both rounds' labels from round 1's weights, continue PPO from
round 1's model, and a round killed inside PPO resumes there without redoing the finished stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rlaif_code.ppo
from rlaif_code.cli import main
from rlaif_code.core.artifacts import read_stage_record
from rlaif_code.core.config import ConfigError
from rlaif_code.pipeline import PipelineConfig
from rlaif_code.ppo import PPOConfig
from tiny import tiny_pipeline_config

ROUND_STAGES = ["sample-r2", "feedback-r2", "reward-r2", "ppo-r2"]


def test_two_rounds_chain_their_inputs_and_a_killed_round_resumes(tmp_path: Path, monkeypatch) -> None:
    path = tiny_pipeline_config(tmp_path)
    run_dir = tmp_path / "run"
    real_run = rlaif_code.ppo.run
    killed: list[str] = []

    def killed_once_in_round_two(cfg, *args, **kwargs):
        if cfg.out_dir.endswith("round2/ppo") and not killed:
            killed.append(cfg.out_dir)
            raise KeyboardInterrupt  # what a kill leaves: the stage marked failed, its partial output kept
        return real_run(cfg, *args, **kwargs)

    monkeypatch.setattr(rlaif_code.ppo, "run", killed_once_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        main(["run", "--config", str(path), "--set", "rounds=2"])
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert stages["reward-r2"]["status"] == "done" and stages["ppo-r2"]["status"] == "failed"
    assert stages.get("evaluate", {}).get("status") != "done"  # an unfinished round is never reported

    assert main(["run", "--config", str(path), "--set", "rounds=2"]) == 0
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert {name: stages[name]["runs"] for name in ROUND_STAGES} == {
        "sample-r2": 1, "feedback-r2": 1, "reward-r2": 1, "ppo-r2": 2}
    assert list(stages)[list(stages).index("ppo") + 1: list(stages).index("ppo") + 5] == ROUND_STAGES

    reward2 = read_stage_record(run_dir / "round2" / "reward")["config"]
    assert reward2["base_model"] == str(run_dir / "reward")  # warm start
    assert reward2["extra_feedback"] == [str(run_dir / "feedback" / "feedback.jsonl")]
    rows = sum(len((d / "feedback.jsonl").read_text().splitlines())
               for d in (run_dir / "feedback", run_dir / "round2" / "feedback"))
    reward_metrics = read_stage_record(run_dir / "round2" / "reward")["metrics"]
    assert reward_metrics["n_train"] + reward_metrics["n_heldout"] + reward_metrics["duplicates_dropped"] \
        - reward_metrics["n_synthetic"] == rows
    ppo2 = read_stage_record(run_dir / "round2" / "ppo")["config"]
    assert ppo2["policy"] == str(run_dir / "ppo" / "model")
    assert ppo2["reward_model"] == str(run_dir / "round2" / "reward")
    sample2 = read_stage_record(run_dir / "round2" / "sample")["config"]
    assert sample2["model"] == str(run_dir / "ppo" / "model")
    for name in ("rlaif", "rlaif-round1"):
        assert json.loads((run_dir / "eval" / f"{name}.json").read_text())["n"] == 4


def test_rounds_need_a_reward_model_to_refit() -> None:
    with pytest.raises(ConfigError, match="rounds: .*reward_source: feedback"):
        PipelineConfig(rounds=2, ppo=PPOConfig(reward_source="feedback", dev_every=0))
    with pytest.raises(ConfigError, match="rounds: must be >= 1"):
        PipelineConfig(rounds=0)
