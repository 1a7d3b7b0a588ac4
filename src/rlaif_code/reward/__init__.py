"""Reward stage: a scalar reward model (M_reward) trained on the AI feedback labels."""

from rlaif_code.reward.stage import RewardConfig, run

__all__ = ["RewardConfig", "run"]
