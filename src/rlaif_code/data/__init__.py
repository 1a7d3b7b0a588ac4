"""Data stage: APIBench examples -> train/eval JSONL with prompts and targets."""

from rlaif_code.data.stage import DataConfig, load_split, run

__all__ = ["DataConfig", "run", "load_split"]
