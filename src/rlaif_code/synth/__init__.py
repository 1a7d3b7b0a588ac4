"""Synth stage: training examples made from an API database (template or LLM self-instruct)."""

from rlaif_code.synth.stage import SynthConfig, run

__all__ = ["SynthConfig", "run"]
