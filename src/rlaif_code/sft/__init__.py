"""SFT stage: fine-tune the base model on Gorilla prompts and answers (M_SFT)."""

from rlaif_code.sft.stage import SFTConfig, run

__all__ = ["SFTConfig", "run"]
