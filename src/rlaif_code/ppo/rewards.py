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

import torch

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
        contexts, _ = tool_contexts(samples, questions, cfg.data, tools, cache, cfg.api_db)
        return [score_answers(rubric, tool_answers(ctx, questions)).score for ctx in contexts]

    return score


def source_scores(cfg: Any, reward_fn: Callable[[list[str], list[str]], Any] | None, reward_model: Any,
                  reward_tokenizer: Any, feedback: FeedbackScorer | None, prompts: list[str], answers: list[str],
                  batch_size: int, device: Any, autocast: Callable[[], Any]) -> torch.Tensor:
    """(B,) float32: `reward_fn(prompts, answers)` when given, else the reward model's logit on
    prompt + answer, the online rubric score, or the logit + feedback_weight x the score."""
    if reward_fn is not None:
        scores = torch.as_tensor(reward_fn(prompts, answers), dtype=torch.float32).to(device).reshape(-1)
        if scores.shape[0] != len(answers):
            raise ValueError(f"reward_fn returned {scores.shape[0]} scores for {len(answers)} answers")
        return scores
    scores = torch.zeros(len(answers), dtype=torch.float32, device=device)
    if reward_model is not None:
        from rlaif_code.reward.model import score_texts

        texts = [p + a for p, a in zip(prompts, answers)]
        with autocast():
            scores += torch.tensor(score_texts(reward_model, reward_tokenizer, texts, batch_size),
                                   dtype=torch.float32, device=device)
    if feedback is not None:
        weight = cfg.feedback_weight if reward_model is not None else 1.0
        scores += weight * torch.tensor(feedback(prompts, answers), dtype=torch.float32, device=device)
    return scores
