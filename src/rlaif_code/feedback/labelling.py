"""From scores to labels, and what the labels say: balance, contrast, duplicates.

Three modes (`threshold_mode`):

- `absolute`: accepted when score >= threshold; means the same in every run.
- `quantile`: the threshold is that quantile of the batch's scores (0.5 accepts the upper half).
- `relative` (the default): labels contrast the answers *of one prompt*. An answer is accepted
  when it reaches the threshold (a floor: with the default rubric, failing a gate - no code,
  the wrong kind of API, code that does not run - stays below it) and no answer to the same
  prompt scored higher. When all of a prompt's answers tie, the floor alone decides.

Why relative by default: on the full TorchHub run the SFT model called a real API of the right
kind in ~85% of its answers and the reference API in ~5%; absolute labels then said "any real API
is good" (91.8% accepted) and the reward model learned exactly that. Accepting only the best of
each prompt's answers turns "the reference API, with code that runs" into the thing that
separates accepted from rejected among answers to the same instruction, which is what the
policy has to learn to prefer.

`contrast_rate`: the share of prompts with two or more answers whose answers received different
labels; a reward model can only learn to rank within a prompt from those.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal

from rlaif_code.feedback.rubric import threshold_value

ThresholdMode = Literal["absolute", "quantile", "relative"]


def assign_labels(rows: list[dict[str, Any]], mode: ThresholdMode, threshold: float) -> float:
    """Set each row's `label`; returns the score threshold used. Rows need example_id, score, n_answered."""
    scored = [row for row in rows if row["n_answered"]]  # answers nobody scored: always rejected, no vote
    cut = threshold_value([row["score"] for row in scored], "quantile" if mode == "quantile" else "absolute",
                          threshold)
    best: dict[str, float] = defaultdict(lambda: float("-inf"))
    for row in scored:
        best[str(row["example_id"])] = max(best[str(row["example_id"])], row["score"])
    for row in rows:
        accepted = bool(row["n_answered"]) and row["score"] >= cut
        if mode == "relative":
            accepted = accepted and row["score"] >= best[str(row["example_id"])] - 1e-9
        row["label"] = "accepted" if accepted else "rejected"
    return cut


def label_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Label balance, the contrast rate, and how many answers repeat another answer to their prompt."""
    by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_prompt[str(row["example_id"])].append(row)
    multi = [group for group in by_prompt.values() if len(group) > 1]
    contrasted = sum(len({row["label"] for row in group}) > 1 for group in multi)
    duplicates = sum(len(group) - len({row["text"].strip() for row in group}) for group in by_prompt.values())
    accepted = sum(row["label"] == "accepted" for row in rows)
    return {
        "n_prompts": len(by_prompt),
        "prompts_with_several_answers": len(multi),
        "contrast_rate": contrasted / len(multi) if multi else None,
        "prompts_all_accepted": sum(all(r["label"] == "accepted" for r in g) for g in by_prompt.values()),
        "prompts_all_rejected": sum(all(r["label"] == "rejected" for r in g) for g in by_prompt.values()),
        "duplicate_answers": duplicates,
        "label_balance": {"accepted": accepted, "rejected": len(rows) - accepted},
    }


# What the evaluation measures, and the tool check that measures the same thing on a training answer.
OUTCOME_CHECKS = {"exact_api": "api_matches_reference", "gorilla_correct": "domain_matches",
                  "executes": "executes"}


def agreement_with_outcomes(rows: list[dict[str, Any]], check_of_question: dict[str, str]) -> dict[str, Any]:
    """How the labels line up with the evaluator's outcomes on the same answers: per outcome (where
    a rubric question measured it), the accepted share among answers with and without it, and the
    share of accepted answers that have it. `check_of_question`: question id -> its tool check."""
    out: dict[str, Any] = {}
    for outcome, check_name in OUTCOME_CHECKS.items():
        qid = next((q for q, c in check_of_question.items() if c == check_name), None)
        if qid is None:
            continue
        pairs = [(row["answers"][qid]["answer"] == "yes", row["label"] == "accepted") for row in rows
                 if row["answers"].get(qid, {}).get("answer") in ("yes", "no")]
        with_it = [accepted for has, accepted in pairs if has]
        without = [accepted for has, accepted in pairs if not has]
        accepted = [has for has, acc in pairs if acc]
        out[outcome] = {
            "rate": len(with_it) / len(pairs) if pairs else None,
            "accepted_if_yes": sum(with_it) / len(with_it) if with_it else None,
            "accepted_if_no": sum(without) / len(without) if without else None,
            "share_of_accepted": sum(accepted) / len(accepted) if accepted else None,
        }
    return out
