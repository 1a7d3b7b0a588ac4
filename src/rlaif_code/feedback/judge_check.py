"""`rlaif judge-check`: can this judge be trusted? Its agreement with the tools, per question.

Before a judge's answers train a reward model, ask it the rubric questions that a
tool can verify on a seeded sample of `n` answers, and compare with what the tools
say. By default the questions are those of the packaged `judge_check_rubric.yaml`:
the default rubric's tool questions but `code_executes` (which needs the sandbox);
`rubric` picks another file (its tool questions are used) and `questions` a subset of ids. A
judge that disagrees with the tools where the truth is known should not be trusted
on the questions only it can answer (completeness, arguments, explanation, logic).

Output (in `out_dir`): `judge_check.json` with, per question: `n` (answers asked),
`n_compared` (both sides gave yes/no), `accuracy`, `kappa` (Cohen's kappa,
scikit-learn; null when it is undefined, i.e. both sides gave one and the same answer
throughout), `tool_yes`, `judge_yes`, `judge_unparseable`, `tool_undecided` and the
confusion counts; plus the same pooled over all questions. `judge_check_rows.jsonl`
holds every (answer, question) pair with both answers; `stage.json` the config.
Replies are cached as in the feedback stage (the same cache file may be shared).

With `feedback` (a feedback stage's output), the report also says what its *labels* mean
(`labels_vs_outcomes`): for each outcome the evaluation measures (exact API, Gorilla's correct,
executability), its rate among the labelled answers, the accepted share with and without it,
and its share among the accepted answers.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import (
    InputError,
    atomic_write_json,
    atomic_write_jsonl,
    finished_result,
    iter_jsonl,
    write_stage_record,
)
from rlaif_code.core.config import check_at_least
from rlaif_code.core.fields import added_field
from rlaif_code.feedback.checking import ToolsConfig, tool_answers, tool_contexts
from rlaif_code.feedback.inputs import load_references, load_samples
from rlaif_code.feedback.judges import make_judge
from rlaif_code.feedback.judges.hf_judge import HFJudgeConfig
from rlaif_code.feedback.judges.openai_judge import OpenAIJudgeConfig
from rlaif_code.feedback.labelling import agreement_with_outcomes
from rlaif_code.feedback.rubric import judge_check_rubric_path, load_rubric
from rlaif_code.feedback.stage import cache_for, llm_answers, record_config
from rlaif_code.feedback.stage import run_from_cli as _run_from_cli


@dataclass
class JudgeCheckConfig:
    samples: str = "runs/default/sample/samples.jsonl"  # the answers to draw from: the sample stage's samples.jsonl
    data_dir: str = "runs/default/data"  # the data stage's output: train.jsonl / eval.jsonl
    data: str | None = None  # Gorilla data (API databases); None: $RLAIF_DATA, else the download cache
    api_db: str | None = added_field(None)  # your API database (hub custom); None: the hubs' own
    rubric: str | None = None  # its tool questions are the ones checked; None: judge_check_rubric.yaml
    questions: list[str] = field(default_factory=list)  # a subset of those question ids; empty: all
    judge: str = "openai"  # the LLM judge to check: openai or hf
    openai: OpenAIJudgeConfig = field(default_factory=OpenAIJudgeConfig)  # the openai judge (any compatible server)
    hf: HFJudgeConfig = field(default_factory=HFJudgeConfig)  # the hf judge (a local causal LM)
    tools: ToolsConfig = field(default_factory=ToolsConfig)  # the tool checks the judge is compared with
    judge_sees_reference: bool = True  # show the judge the reference API's documentation
    n: int = 100  # answers drawn (all of them when fewer); seeded, nested: n=50 is the first half of n=100
    seed: int = 0  # seeds which answers are drawn
    cache_path: str | None = None  # SQLite cache of judge replies; None: <out_dir>/judge_cache.sqlite
    # A feedback stage's feedback.jsonl: also report how its labels agree with the evaluator's outcomes
    # (exact API, Gorilla's correct, executability) on those labelled answers.
    feedback: str | None = None
    out_dir: str = "runs/default/judge_check"  # where judge_check.json and judge_check_rows.jsonl go

    def __post_init__(self) -> None:
        check_at_least(self, 1, "n")


def labels_vs_outcomes(feedback: str | Path) -> dict[str, Any]:
    """`labelling.agreement_with_outcomes` over a feedback file, the checks read from its rows."""
    path = Path(feedback) / "feedback.jsonl" if Path(feedback).is_dir() else Path(feedback)
    if not path.is_file():
        raise InputError(f"feedback file not found: {path} (judge-check feedback: a feedback stage's output)")
    rows = [row for _, row in iter_jsonl(path)]
    for lineno, row in enumerate(rows, 1):
        if not isinstance(row.get("answers"), dict) or row.get("label") not in ("accepted", "rejected"):
            raise InputError(f"{path}:{lineno}: not a feedback row (needs 'answers' and 'label')")
    checks = {qid: answer["by"][len("tool:"):] for row in rows for qid, answer in row["answers"].items()
              if str(answer.get("by", "")).startswith("tool:")}
    return {"feedback": str(path), "n_answers": len(rows), **agreement_with_outcomes(rows, checks)}


def agreement(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Agreement figures for (tool answer, judge answer) pairs; only yes/no pairs are compared."""
    from sklearn.metrics import cohen_kappa_score

    compared = [(t, j) for t, j in pairs if t in ("yes", "no") and j in ("yes", "no")]
    out: dict[str, Any] = {
        "n": len(pairs),
        "n_compared": len(compared),
        "tool_yes": sum(t == "yes" for t, _ in pairs),
        "judge_yes": sum(j == "yes" for _, j in pairs),
        "judge_unparseable": sum(j == "unparseable" for _, j in pairs),
        "tool_undecided": sum(t not in ("yes", "no") for t, _ in pairs),
        "confusion": {f"tool_{t}_judge_{j}": sum(p == (t, j) for p in compared)
                      for t in ("yes", "no") for j in ("yes", "no")},
    }
    if not compared:
        out.update(accuracy=None, kappa=None)
        return out
    tools, judged = zip(*compared)
    out["accuracy"] = sum(t == j for t, j in compared) / len(compared)
    if len(set(tools) | set(judged)) < 2:
        out["kappa"] = None  # one label throughout: chance agreement is 1, kappa undefined
    else:
        kappa = float(cohen_kappa_score(tools, judged, labels=["yes", "no"]))
        out["kappa"] = None if math.isnan(kappa) else kappa
    return out


def run(cfg: JudgeCheckConfig) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    recorded = record_config(cfg)
    if (done := finished_result(out, "judge-check", recorded)) is not None:
        return done
    rubric = load_rubric(cfg.rubric or judge_check_rubric_path())
    questions = rubric.tool_questions
    if cfg.questions:
        by_id = {q.id: q for q in questions}
        unknown = [qid for qid in cfg.questions if qid not in by_id]
        if unknown:
            raise InputError(f"{rubric.source}: question '{unknown[0]}' is not a tool-verified question "
                             f"(those are: {', '.join(by_id)})")
        questions = [by_id[qid] for qid in cfg.questions]
    if not questions:
        raise InputError(f"{rubric.source}: no question is answered by a tool, so there is nothing to check "
                         "the judge against")
    judge = make_judge(cfg.judge, cfg)
    if not judge.asks_llm:
        raise InputError("judge-check needs an LLM judge (openai or hf), not 'tools'")

    references = load_references(cfg.data_dir)
    samples = load_samples(cfg.samples, references, cfg.data_dir)
    # A seeded shuffle cut at n: the answers for a smaller n are the first ones of a larger
    # n (same seed), and they are asked first, so an interrupted check can be finished
    # from the cache with a smaller n.
    order = list(range(len(samples)))
    random.Random(cfg.seed).shuffle(order)
    samples = [samples[i] for i in order[:cfg.n]]

    cache = cache_for(cfg)
    try:
        contexts, _exec_stats = tool_contexts(samples, questions, cfg.data, cfg.tools, cache, cfg.api_db)
        truths = [tool_answers(ctx, questions) for ctx in contexts]
        judged = llm_answers(judge, cache, samples, questions, cfg.judge_sees_reference)
    finally:
        judge.close()
        cache_stats = {"cache_hits": cache.hits, "cache_misses": cache.misses}
        cache.close()

    rows = []
    for sample, truth, answer in zip(samples, truths, judged):
        for q in questions:
            rows.append({"example_id": sample.row["example_id"], "sample_id": sample.row["sample_id"],
                         "question": q.id, "tool": truth[q.id].answer, "tool_detail": truth[q.id].detail,
                         "judge": answer[q.id].answer, "p_yes": answer[q.id].p_yes})
    per_question = {q.id: {"tool": q.by, **agreement([(r["tool"], r["judge"]) for r in rows
                                                      if r["question"] == q.id])}
                    for q in questions}
    pooled = agreement([(r["tool"], r["judge"]) for r in rows])
    report = {"judge": f"{judge.kind}:{judge.model}", "n_answers": len(samples), "seed": cfg.seed,
              "per_question": per_question, "pooled": pooled}
    if cfg.feedback:
        report["labels_vs_outcomes"] = labels_vs_outcomes(cfg.feedback)
    atomic_write_jsonl(out / "judge_check_rows.jsonl", rows)
    atomic_write_json(out / "judge_check.json", report)
    metrics = {**report, **cache_stats, "judge_stats": judge.stats.to_dict()}
    write_stage_record(out, "judge-check", recorded, metrics=metrics,
                       outputs=["judge_check.json", "judge_check_rows.jsonl"])
    return metrics


def run_from_cli(cfg: JudgeCheckConfig, args: Any) -> int:
    return _run_from_cli(cfg, args, runner=run)
