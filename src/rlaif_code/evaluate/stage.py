"""`rlaif eval`: score an answers file against the APIBench eval items.

Answers are Gorilla's released format (`question_id`, `text`: the question_id is the
1-based line of the hub's eval file) or our sample stage's output (`example_id`,
`text`). Every line counts, as in Gorilla's scripts: the denominator is the number
of answer lines, and a line without `text` is an error, not a skipped line.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlaif_code.core.artifacts import InputError, atomic_write_json, iter_jsonl
from rlaif_code.core.config import check, check_at_least, to_dict
from rlaif_code.core.fields import added_field
from rlaif_code.data.apibench import Example, load_api_database, load_eval_examples
from rlaif_code.data.parse import parse_output
from rlaif_code.data.source import DataSource
from rlaif_code.evaluate import exec_metric as _registers_exec  # noqa: F401  (the exec metric registers on import)
from rlaif_code.evaluate.metrics import METRICS, EvalContext, EvalItem
from rlaif_code.sandbox.verdicts import ExecSettings

# Keys every result file has, as fractions in [0, 1] (the contract with report and users).
HEADLINE = ("accuracy", "hallucination", "error", "exact_match", "rouge", "codebleu")


@dataclass
class EvalConfig:
    # APIBench hub the answers are for: hf, tf (TensorFlow Hub), th (TorchHub), custom (your api_db and eval_set)
    hub: Literal["hf", "tf", "th", "custom"] = "hf"
    # The answers JSONL: Gorilla's format (question_id, text) or the sample stage's (example_id, text).
    responses: str = field(default="", metadata={"required": True, "metavar": "FILE"})
    data: str | None = None  # Gorilla data dir; None: $RLAIF_DATA, else the download cache
    # your API database (answers are matched against it, hermetic runs know its ids); None: the hub's own
    api_db: str | None = added_field(None)
    eval_set: str | None = None  # a data stage's eval.jsonl; default: the hub's whole eval file
    out: str | None = None  # where the result JSON is written; None: not written
    # Metrics to compute, by name: ast (accuracy, hallucination, error), rouge, codebleu.
    metrics: list[str] = field(default_factory=lambda: ["ast", "rouge", "codebleu"])
    per_domain: bool = True  # also break the headline metrics down by the examples' domain
    show_table: bool = True  # print the result as a table
    label: str = ""  # name shown in tables and reports (default: the responses file's name)
    exec: bool = False  # executability in the sandbox (evaluate/exec_metric.py; needs `rlaif exec-env`)
    # Highest executability tier checked: parse (Python parses it), static (and pyflakes finds no
    # undefined name and every import resolves), run (it runs to its end in the sandbox).
    exec_tier: Literal["parse", "static", "run"] = "run"
    # hermetic: no network, model loading intercepted (ids checked against the API database);
    # real: models from the local Hugging Face cache, for users who have the weights.
    exec_mode: Literal["hermetic", "real"] = "hermetic"
    exec_workers: int = 2  # snippets run in parallel
    exec_env: str | None = None  # exec env dir; None: $RLAIF_EXEC_ENV, else ~/.cache/rlaif-code/exec-env
    exec_timeout: float = 60.0  # seconds per snippet (each imports torch/transformers afresh)

    def __post_init__(self) -> None:
        check_at_least(self, 1, "exec_workers")
        check(self.exec_timeout > 0, "exec_timeout", f"must be positive, got {self.exec_timeout!r}")
        if self.hub == "custom":  # no eval file or database of its own in Gorilla's data
            check(bool(self.api_db), "api_db", "must be set for hub custom (your API database file)")
            check(bool(self.eval_set), "eval_set", "must be set for hub custom (the data stage's eval.jsonl)")


def load_eval_set(cfg: EvalConfig, source: DataSource) -> list[Example]:
    if cfg.eval_set:
        rows = iter_jsonl(cfg.eval_set)
        try:
            return [Example.from_dict(row) for _, row in rows]
        except TypeError as err:
            raise InputError(f"{cfg.eval_set}: not a data-stage eval file ({err})") from err
    return load_eval_examples(source, cfg.hub)


def load_items(cfg: EvalConfig, examples: list[Example]) -> list[EvalItem]:
    if not cfg.responses:
        raise InputError("no answers file given: set --responses FILE")
    by_id = {e.example_id: e for e in examples}
    by_question = {e.question_id: e for e in examples}
    items = []
    for line, row in iter_jsonl(cfg.responses):
        where = f"{cfg.responses}:{line}"
        if "example_id" in row:
            example = by_id.get(row["example_id"])
            if example is None:
                raise InputError(f"{where}: example_id {row['example_id']!r} is not in the eval set")
        elif "question_id" in row:
            qid = row["question_id"]
            if not isinstance(qid, int) or isinstance(qid, bool):
                raise InputError(f"{where}: question_id must be an integer, got {qid!r}")
            example = by_question.get(qid)
            if example is None:
                raise InputError(f"{where}: question_id {qid} is not in the eval set "
                                 f"({len(examples)} items)")
        else:
            raise InputError(f"{where}: answer has neither 'question_id' nor 'example_id'")
        text = row.get("text")
        if text is not None and not isinstance(text, str):
            raise InputError(f"{where}: 'text' must be a string")
        items.append(EvalItem(example=example, text=text, parsed=parse_output(text or ""), line=line))
    if not items:
        raise InputError(f"{cfg.responses}: no answers")
    return items


def _per_domain(items: list[EvalItem], per_item: dict[str, list[Any]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[item.example.domain].append(i)
    out = {}
    for domain, idx in sorted(groups.items()):
        row: dict[str, float] = {"n": len(idx)}
        if "outcome" in per_item:
            outcomes = [per_item["outcome"][i] for i in idx]
            row["accuracy"] = outcomes.count("correct") / len(idx)
            row["hallucination"] = outcomes.count("hallucination") / len(idx)
            row["exact_match"] = sum(per_item["exact_match"][i] for i in idx) / len(idx)
        for key in ("rouge", "codebleu", "executability"):
            if key in per_item:
                row[key] = sum(float(per_item[key][i]) for i in idx) / len(idx)
        out[domain] = row
    return out


def exec_settings(cfg: EvalConfig) -> ExecSettings:
    return ExecSettings(tier=cfg.exec_tier, mode=cfg.exec_mode, workers=cfg.exec_workers, env=cfg.exec_env,
                        timeout=cfg.exec_timeout, data=cfg.data, api_db=cfg.api_db)


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    source = DataSource.resolve(cfg.data)
    examples = load_eval_set(cfg, source)
    items = load_items(cfg, examples)
    ctx = EvalContext(hub=cfg.hub, api_database=load_api_database(source, cfg.hub, cfg.api_db),
                      exec_settings=exec_settings(cfg))
    summary: dict[str, Any] = {"n": len(items)}
    per_item: dict[str, list[Any]] = {}
    extra: dict[str, Any] = {}
    timings = {}
    for name in [*cfg.metrics, *(["exec"] if cfg.exec and "exec" not in cfg.metrics else [])]:
        metric = METRICS.get(name)
        started = time.perf_counter()
        result = metric(items, ctx)
        timings[name] = round(time.perf_counter() - started, 3)
        summary.update(result.summary)
        per_item.update(result.per_item)
        extra.update(result.extra)
    result_doc: dict[str, Any] = {
        **summary,
        "label": cfg.label or Path(cfg.responses).stem,
        "hub": cfg.hub,
        "responses": str(cfg.responses),
        "extra": extra,
        "seconds": timings,
        "config": to_dict(cfg),
    }
    if cfg.per_domain:
        result_doc["per_domain"] = _per_domain(items, per_item)
    result_doc["items"] = [
        {"line": item.line, "example_id": item.example.example_id, "question_id": item.example.question_id,
         "domain": item.example.domain, **{key: values[i] for key, values in per_item.items()}}
        for i, item in enumerate(items)
    ]
    return result_doc


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{result['label']} ({result['hub']}, n={result['n']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in HEADLINE + ("executability",):
        if key in result:
            table.add_row(key, f"{100 * result[key]:.2f}%")
    for key in sorted(result):
        if key.startswith(("rouge", "codebleu_", "exec_")) and key not in HEADLINE and isinstance(result[key], float):
            table.add_row(f"  {key}", f"{100 * result[key]:.2f}%")
    console.print(table)
    if result.get("per_domain"):
        domains = Table(title="per domain")
        columns = [c for c in ("accuracy", "hallucination", "exact_match", "rouge", "codebleu", "executability")
                   if any(c in row for row in result["per_domain"].values())]
        domains.add_column("domain")
        domains.add_column("n", justify="right")
        for column in columns:
            domains.add_column(column, justify="right")
        for domain, row in result["per_domain"].items():
            domains.add_row(domain, str(row["n"]), *(f"{100 * row.get(c, 0.0):.1f}" for c in columns))
        console.print(domains)


def run(cfg: EvalConfig) -> dict[str, Any]:
    result = evaluate(cfg)
    if cfg.show_table:
        print_table(result)
    if cfg.out:
        atomic_write_json(cfg.out, result)
    return {key: result[key] for key in ("n",) + HEADLINE if key in result}
