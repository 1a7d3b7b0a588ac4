"""The feedback stage: judge every sampled answer against a rubric, score it, label it.

Input: the sample stage's `samples.jsonl` (example_id, sample_id, prompt, text, parsed,
...) and the data stage's directory (`train.jsonl` / `eval.jsonl`), joined on
example_id for the instruction, the reference API, the domain and the hub.

Output (in `out_dir`): `feedback.jsonl`, one row per answer::

    {example_id, sample_id, question_id, prompt, text, label: accepted|rejected,
     score, raw_score, answers: {question_id: {answer: yes|no|unparseable, p_yes, by}}, ...}

(`prompt`, `text` and `label` are what the reward stage reads), and `stage.json` with
the config and a summary: label counts, the threshold used, yes rates and unparseable
counts per question, requests sent, cache hits, tokens and estimated cost, and the
judge's failed attempts by kind (`judge_stats.errors`: HTTP statuses, timeouts, dropped
connections, replies that could not be read).

Who answers: each rubric question names a tool check or `llm`; tool questions are
answered by the tools, `llm` questions by the configured `judge` (`openai`, `hf`, or
`tools` for none: see `rlaif_code.feedback.judges`). How answers become a score and a
label, and why the default threshold is what it is: see `rlaif_code.feedback.rubric`.

Resuming: LLM replies go to an SQLite cache (`cache_path`, default
`<out_dir>/judge_cache.sqlite`) as they arrive. A run that is killed, or stops on a
server error, loses nothing it was told; run it again and it asks only the rest. The
error (one line: the server, the last error, how many answers are left) is raised as a
`JudgeError`; `rlaif feedback` prints it and exits with code 2. A finished stage with
the same config is skipped outright.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import (
    atomic_write_jsonl,
    finished_result,
    write_stage_record,
)
from rlaif_code.core.config import check_at_least, check_fraction
from rlaif_code.core.fields import added_field
from rlaif_code.feedback.cache import JudgeCache
from rlaif_code.feedback.checking import ToolsConfig, tool_answers, tool_contexts
from rlaif_code.feedback.inputs import Sample, load_references, load_samples
from rlaif_code.feedback.judges import Judge, JudgeError, JudgeSubject, ask_all, make_judge
from rlaif_code.feedback.judges.base import one_line
from rlaif_code.feedback.judges.hf_judge import HFJudgeConfig
from rlaif_code.feedback.judges.openai_judge import OpenAIJudgeConfig
from rlaif_code.feedback.labelling import ThresholdMode, agreement_with_outcomes, assign_labels, label_summary
from rlaif_code.feedback.rubric import (
    Answer,
    Question,
    Rubric,
    load_rubric,
    rubric_digest,
    score_answers,
)


@dataclass
class FeedbackConfig:
    samples: str = "runs/default/sample/samples.jsonl"  # the answers to judge: the sample stage's samples.jsonl
    data_dir: str = "runs/default/data"  # the data stage's output: train.jsonl / eval.jsonl
    data: str | None = None  # Gorilla data (API databases); None: $RLAIF_DATA, else the download cache
    api_db: str | None = added_field(None)  # your API database (hub custom); None: the hubs' own
    rubric: str | None = None  # rubric YAML file; None: the packaged default rubric
    judge: str = "tools"  # who answers `llm` questions: tools (nobody), openai, hf
    openai: OpenAIJudgeConfig = field(default_factory=OpenAIJudgeConfig)  # the openai judge (any compatible server)
    hf: HFJudgeConfig = field(default_factory=HFJudgeConfig)  # the hf judge (a local causal LM)
    tools: ToolsConfig = field(default_factory=ToolsConfig)  # the tool checks
    judge_sees_reference: bool = True  # show the judge the reference API's documentation
    # relative: accept the best answers of each prompt that reach threshold (a floor); absolute:
    # accept a score >= threshold; quantile: threshold is a quantile of the batch's scores.
    threshold_mode: ThresholdMode = "relative"
    threshold: float = 0.85  # in [0, 1]: the floor (relative), the score needed (absolute), or the quantile
    max_samples: int | None = None  # the first N answers only, for budgets
    cache_path: str | None = None  # SQLite cache of judge replies; None: <out_dir>/judge_cache.sqlite
    out_dir: str = "runs/default/feedback"  # where feedback.jsonl (scores and labels) and its summary go

    def __post_init__(self) -> None:
        check_fraction(self, "threshold", include_one=True)
        check_at_least(self, 1, "max_samples")

    def fingerprint_inputs(self) -> dict[str, str]:
        # The rubric's content, not just its path, decides the labels: an edited rubric relabels.
        return {"rubric_sha256": rubric_digest(self.rubric)}


def judge_subject(sample: Sample, sees_reference: bool) -> JudgeSubject:
    instruction = sample.reference.get("instruction") or sample.row.get("prompt") or ""
    return JudgeSubject(instruction=instruction, answer_text=sample.row["text"],
                        reference_api=(sample.reference.get("reference_api") or None) if sees_reference else None)


def llm_answers(judge: Judge, cache: JudgeCache | None, samples: list[Sample], questions: list[Question],
                sees_reference: bool) -> list[dict[str, Answer]]:
    """Each sample's answers to `questions` from the judge, through the cache."""
    if not questions or not judge.asks_llm:
        return [{} for _ in samples]
    per_sample = [judge.requests_for(judge_subject(s, sees_reference), questions) for s in samples]
    try:
        replies = ask_all(judge, cache, [req for reqs in per_sample for req in reqs])
    except JudgeError as err:
        unfinished = JudgeError(_unfinished(str(err), per_sample, err.pending_keys, cache is not None))
        unfinished.pending_keys = err.pending_keys
        raise unfinished from err
    by = f"{judge.kind}:{judge.model}"
    out = []
    for reqs in per_sample:
        answers: dict[str, Answer] = {}
        for req in reqs:
            reply = replies[req.key]
            for qid in req.question_ids:
                got = reply["answers"].get(qid) or {"answer": "unparseable", "p_yes": None}
                detail = reply.get("raw") if got["answer"] == "unparseable" else None
                answers[qid] = Answer(answer=got["answer"], p_yes=got.get("p_yes"), by=by, detail=detail)
        out.append(answers)
    return out


def _unfinished(message: str, per_sample: list[list[Any]], pending: frozenset[str], cached: bool) -> str:
    """A judge's error, with how many answers are left unlabelled and what a rerun does."""
    left = sum(any(req.key in pending for req in reqs) for reqs in per_sample)
    where = (" The replies received so far are kept in the cache; rerun to continue (only the "
             "unanswered requests are sent)."
             if cached else "")
    return (f"{one_line(message, 600)} {left} of {len(per_sample)} answers are still to be labelled "
            f"({len(pending)} judge requests unanswered).{where}")


def record_config(cfg: Any) -> Any:
    """The config as stored in stage.json: an API key given in the config is not written out."""
    if getattr(cfg.openai, "api_key", None):
        return dataclasses.replace(cfg, openai=dataclasses.replace(cfg.openai, api_key="***"))
    return cfg


def cache_for(cfg: Any) -> JudgeCache:
    return JudgeCache(cfg.cache_path or Path(cfg.out_dir) / "judge_cache.sqlite")


# -- the stage ---------------------------------------------------------------------------


def _summary(rubric: Rubric, rows: list[dict[str, Any]], threshold: float, cfg: FeedbackConfig) -> dict[str, Any]:
    labels = Counter(row["label"] for row in rows)
    yes: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    unparseable: Counter[str] = Counter()
    for row in rows:
        for qid, ans in row["answers"].items():
            if ans["answer"] == "unparseable":
                unparseable[qid] += 1
            else:
                answered[qid] += 1
                yes[qid] += ans["answer"] == "yes"
    n = len(rows)
    return {
        "n_answers": n,
        "accepted": labels["accepted"],
        "rejected": labels["rejected"],
        "accepted_fraction": labels["accepted"] / n if n else 0.0,
        "threshold_mode": cfg.threshold_mode,
        "threshold": threshold,
        "mean_score": sum(row["score"] for row in rows) / n if n else 0.0,
        "unscored": sum(row["n_answered"] == 0 for row in rows),
        "unparseable": sum(unparseable.values()),
        "unparseable_by_question": {q.id: unparseable[q.id] for q in rubric.questions},
        "yes_rate_by_question": {q.id: (yes[q.id] / answered[q.id] if answered[q.id] else None)
                                 for q in rubric.questions},
        "skipped_llm_questions": [q.id for q in rubric.llm_questions] if cfg.judge == "tools" else [],
    }


def run(cfg: FeedbackConfig) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    recorded = record_config(cfg)
    digest = rubric_digest(cfg.rubric)
    if (done := finished_result(out, "feedback", recorded)) is not None:
        return done
    rubric = load_rubric(cfg.rubric)
    judge = make_judge(cfg.judge, cfg)
    references = load_references(cfg.data_dir)
    samples = load_samples(cfg.samples, references, cfg.data_dir, cfg.max_samples)

    # Judge replies and sandbox verdicts share the SQLite file, through connections of their own
    # (so that cache_hits counts judge replies only).
    cache = cache_for(cfg) if judge.asks_llm and rubric.llm_questions else None
    exec_cache = cache_for(cfg) if any(q.by == "executes" for q in rubric.questions) else None
    try:
        contexts, exec_stats = tool_contexts(samples, rubric.tool_questions, cfg.data, cfg.tools, exec_cache,
                                             cfg.api_db)
        tool_results = [tool_answers(ctx, rubric.tool_questions) for ctx in contexts]
        llm_results = llm_answers(judge, cache, samples, rubric.llm_questions, cfg.judge_sees_reference)
    finally:
        judge.close()
        cache_stats = {"cache_hits": cache.hits, "cache_misses": cache.misses} if cache else {}
        for opened in (cache, exec_cache):
            if opened is not None:
                opened.close()

    rows = []
    for sample, tools_part, llm_part in zip(samples, tool_results, llm_results):
        answers = {**tools_part, **llm_part}
        scored = score_answers(rubric, answers)
        rows.append({
            "example_id": sample.row["example_id"],
            "sample_id": sample.row["sample_id"],
            "question_id": sample.row.get("question_id"),
            "prompt": sample.row.get("prompt") or sample.reference.get("prompt", ""),
            "text": sample.row["text"],
            "score": scored.score,
            "raw_score": scored.raw_score,
            "n_answered": scored.n_answered,
            "n_unparseable": scored.n_unparseable,
            "answers": {q.id: answers[q.id].to_dict() for q in rubric.questions if q.id in answers},
        })
    threshold = assign_labels(rows, cfg.threshold_mode, cfg.threshold)

    atomic_write_jsonl(out / "feedback.jsonl", rows)
    outcomes = agreement_with_outcomes(rows, {q.id: q.by for q in rubric.tool_questions})
    metrics = {**_summary(rubric, rows, threshold, cfg), **label_summary(rows), "label_vs_outcomes": outcomes,
               **exec_stats,
               "rubric": rubric.source, "rubric_sha256": digest, "judge": cfg.judge,
               **cache_stats, "judge_stats": judge.stats.to_dict()}
    write_stage_record(out, "feedback", recorded, metrics=metrics, outputs=["feedback.jsonl"])
    return metrics


def run_from_cli(cfg: Any, args: Any, runner: Any = None) -> int:
    """CLI entry: a judge that cannot get its answers is a clean error, not a traceback."""
    import json
    import sys

    try:
        metrics = (runner or run)(cfg)
    except JudgeError as err:
        print(f"error: {one_line(err, 2000)}", file=sys.stderr)  # one line, never a traceback
        return 2
    print(json.dumps(metrics, indent=2, default=str))
    return 0
