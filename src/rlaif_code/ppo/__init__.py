"""PPO stage: M_SFT -> M_RL against the reward model.

`stage.py` holds the loop (`train`) and `run`; `config.py` the settings; `losses.py` the maths;
`rollout.py` the sampler; `layout.py` how batches are laid out for forward passes;
`checkpoint.py` and `logger.py` what a run leaves on disk.
"""

from rlaif_code.ppo.config import PPOConfig
from rlaif_code.ppo.stage import run

__all__ = ["PPOConfig", "run"]
