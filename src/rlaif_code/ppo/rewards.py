"""Where a rollout's score comes from (`reward_source`).

- `model` (the paper's method): the reward model's logit on prompt + answer.
- `feedback`: the rubric's tool questions asked of each rollout online (`feedback.checking`, the
  feedback stage's own code: the exact API, the domain, executability in the sandbox...), the
  score their weighted share of yes. No learned model stands between the policy and the checks,
  so there is nothing to exploit but the checks themselves; `llm` questions are left out (no
  judge is asked during PPO).
- `model+feedback`: the logit plus `feedback_weight` times the rubric score.

Each training prompt's reference comes from the data stage's train.jsonl, matched on the prompt
text, as the feedback stage matches samples on example_id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from rlaif_code.core.artifacts import InputError, iter_jsonl

FeedbackScorer = Callable[[list[str], list[str]], list[float]]


def feedback_scorer(cfg: Any) -> FeedbackScorer:
    """(prompts, answers) -> rubric scores in [0, 1], from the tool questions of `cfg.feedback_rubric`."""
    from rlaif_code.data.parse import parse_output
    from rlaif_code.feedback.cache import JudgeCache
    from rlaif_code.feedback.checking import ToolsConfig, tool_answers, tool_contexts
    from rlaif_code.feedback.inputs import Sample
    from rlaif_code.feedback.rubric import load_rubric, score_answers

    path = Path(cfg.data_dir) / "train.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: reward_source {cfg.reward_source} needs the data stage's train.jsonl (the "
                         "references the checks compare with)")
    references = {row["prompt"]: row for _, row in iter_jsonl(path) if isinstance(row.get("prompt"), str)}
    rubric = load_rubric(cfg.feedback_rubric)
    questions = rubric.tool_questions
    if not questions:
        raise InputError(f"{rubric.source}: reward_source {cfg.reward_source} needs tool questions; this rubric "
                         "has only llm ones")
    tools = ToolsConfig(exec_env=cfg.dev_exec_env)
    cache = JudgeCache(Path(cfg.out_dir) / "exec_cache.sqlite") if any(q.by == "executes" for q in questions) \
        else None

    def score(prompts: list[str], answers: list[str]) -> list[float]:
        missing = [p for p in prompts if p not in references]
        if missing:
            raise InputError(f"a PPO prompt is not in {path} (feedback rewards need its reference): {missing[0][:80]}")
        samples = [Sample(row={"example_id": references[p].get("example_id"), "sample_id": i, "text": a},
                          lineno=i + 1, fields=parse_output(a).fields, reference=references[p])
                   for i, (p, a) in enumerate(zip(prompts, answers))]
        contexts, _ = tool_contexts(samples, questions, cfg.data, tools, cache)
        return [score_answers(rubric, tool_answers(ctx, questions)).score for ctx in contexts]

    return score
