"""Evaluate stage: Gorilla-faithful AST accuracy and hallucination, exact API match, ROUGE, CodeBLEU."""

from rlaif_code.evaluate.stage import EvalConfig, evaluate, run

__all__ = ["EvalConfig", "evaluate", "run"]
