"""Sample stage: a model's answers to prompts, several per prompt, as samples.jsonl."""

from rlaif_code.sample.stage import SampleConfig, run

__all__ = ["SampleConfig", "run"]
