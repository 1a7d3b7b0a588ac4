"""Evaluation metrics, each registered by name in `METRICS`.

A metric takes the scored items and the evaluation context and returns summary
figures (fractions in [0, 1]) plus per-item values, so that reports can bootstrap
confidence intervals from the same numbers the summary comes from.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from rlaif_code.core.registry import Registry
from rlaif_code.data.apibench import Example
from rlaif_code.data.ast_match import AstMatcher
from rlaif_code.data.parse import ParsedOutput


@dataclass
class EvalItem:
    example: Example
    text: str | None  # the raw answer; None when the response line had no text
    parsed: ParsedOutput
    line: int  # line in the responses file


@dataclass
class EvalContext:
    hub: str
    api_database: list[dict[str, Any]]
    exec_settings: Any = None  # exec_metric.ExecSettings, for the `exec` metric
    _matcher: AstMatcher | None = None

    @property
    def matcher(self) -> AstMatcher:
        if self._matcher is None:
            self._matcher = AstMatcher(self.api_database, self.hub)
        return self._matcher


@dataclass
class MetricResult:
    summary: dict[str, float]
    per_item: dict[str, list[Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


MetricFn = Callable[[list[EvalItem], EvalContext], MetricResult]
METRICS: Registry[MetricFn] = Registry("metric")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@METRICS.register("ast")
def ast_metric(items: list[EvalItem], ctx: EvalContext) -> MetricResult:
    """Gorilla's accuracy / hallucination / error, plus our stricter exact API match."""
    outcomes, exact, api_calls, matched = [], [], [], []
    for item in items:
        result = ctx.matcher.evaluate(item.text, item.example.reference_api)
        outcomes.append(result.outcome)
        exact.append(float(result.exact))
        api_calls.append(result.api_call)
        matched.append(ctx.api_database[result.matched_index].get("api_name")
                       if result.matched_index is not None else None)
    n = len(items)
    summary = {
        "accuracy": outcomes.count("correct") / n if n else 0.0,
        "hallucination": outcomes.count("hallucination") / n if n else 0.0,
        "error": outcomes.count("error") / n if n else 0.0,
        "exact_match": _mean(exact),
    }
    per_item = {"outcome": outcomes, "exact_match": exact, "cut_api_call": api_calls, "matched_api": matched}
    return MetricResult(summary, per_item)


ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@METRICS.register("rouge")
def rouge_metric(items: list[EvalItem], ctx: EvalContext) -> MetricResult:
    """ROUGE-1/2/L/Lsum F-scores of generated vs reference code; `rouge` is their mean (the paper's)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=False)
    per_key: dict[str, list[float]] = {key: [] for key in ROUGE_KEYS}
    for item in items:
        scores = scorer.score(item.example.code, item.parsed.fields["code"])
        for key in ROUGE_KEYS:
            per_key[key].append(scores[key].fmeasure)
    per_item_mean = [_mean([per_key[k][i] for k in ROUGE_KEYS]) for i in range(len(items))]
    summary = {key: _mean(values) for key, values in per_key.items()}
    summary["rouge"] = _mean(per_item_mean)
    return MetricResult(summary, {"rouge": per_item_mean})


CODEBLEU_PARTS = ("ngram_match_score", "weighted_ngram_match_score", "syntax_match_score", "dataflow_match_score")


@METRICS.register("codebleu")
def codebleu_metric(items: list[EvalItem], ctx: EvalContext) -> MetricResult:
    """CodeBLEU (codebleu package, equal weights) per item, averaged.

    The package adds a data-flow match of 0 (no data flow in the reference, or none
    matched) into the total as if it were 1 (`dataflow_match_score or 1`), which lifts
    CodeBLEU by up to 0.25 per snippet; the components, and how many snippets got that
    free quarter, are reported so users see it. An empty generation scores 0 on all parts.
    """
    from codebleu import calc_codebleu

    per_part: dict[str, list[float]] = {part: [] for part in CODEBLEU_PARTS}
    totals: list[float] = []
    dataflow_defaulted = 0
    quiet = logging.getLogger()
    previous = quiet.level
    quiet.setLevel(logging.ERROR)  # the package warns on every snippet without data flow
    try:
        for item in items:
            prediction = item.parsed.fields["code"]
            reference = item.example.code
            if not prediction.strip() or not reference.strip():
                scores = {part: 0.0 for part in CODEBLEU_PARTS} | {"codebleu": 0.0}
            else:
                with contextlib.redirect_stdout(io.StringIO()):
                    scores = calc_codebleu([reference], [prediction], lang="python")
                dataflow_defaulted += not scores["dataflow_match_score"]
            for part in CODEBLEU_PARTS:
                per_part[part].append(float(scores[part]))
            totals.append(float(scores["codebleu"]))
    finally:
        quiet.setLevel(previous)
    summary = {"codebleu": _mean(totals)}
    summary.update({f"codebleu_{part.replace('_score', '')}": _mean(v) for part, v in per_part.items()})
    extra = {"codebleu_dataflow_defaulted_to_1": dataflow_defaulted}
    return MetricResult(summary, {"codebleu": totals}, extra)
