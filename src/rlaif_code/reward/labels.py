"""What the reward model learns from: the feedback stage's labelled answers, split by prompt."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import InputError, iter_jsonl

_LABELS = {"accepted": 1, "rejected": 0, True: 1, False: 0}


@dataclass
class LabelledText:
    group: str  # example_id (or the prompt): held-out splits never separate one group
    text: str  # prompt + answer
    label: int  # 1 accepted, 0 rejected
    exact: bool | None = None  # the answer calls the reference API (the feedback's api_matches_reference), if asked
    rejected: str | None = None  # prompt + a worse answer that must score below this one (a pairwise item)


def feedback_path(feedback: str | Path) -> Path:
    path = Path(feedback)
    return path / "feedback.jsonl" if path.is_dir() else path


def load_feedback(feedback: str | Path, max_examples: int | None = None) -> list[LabelledText]:
    """(prompt + answer, 0/1) from the feedback stage's rows; bad rows name file:line."""
    path = feedback_path(feedback)
    rows = []
    for lineno, row in iter_jsonl(path):
        for key in ("prompt", "text"):
            if not isinstance(row.get(key), str):
                raise InputError(f"{path}:{lineno}: missing string field '{key}'")
        label = row.get("label")
        if isinstance(label, str):
            label = label.strip().lower()
        if not isinstance(label, (str, bool)) or label not in _LABELS:
            raise InputError(f"{path}:{lineno}: 'label' = {row.get('label')!r}; expected \"accepted\", "
                             "\"rejected\", true or false")
        group = str(row.get("example_id") or row["prompt"])
        exact = next((a.get("answer") == "yes" for a in (row.get("answers") or {}).values()
                      if isinstance(a, dict) and a.get("by") == "tool:api_matches_reference"), None)
        rows.append(LabelledText(group=group, text=row["prompt"] + row["text"], label=_LABELS[label], exact=exact))
        if max_examples is not None and len(rows) >= max_examples:
            break
    if not rows:
        raise InputError(f"{path}: no labelled answers to train on")
    return rows


def drop_duplicates(rows: list[LabelledText]) -> tuple[list[LabelledText], int]:
    """The first of each identical (prompt, answer) pair: a repeated sample would weigh twice."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for row in rows:
        key = (row.group, row.text.strip())
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def split_heldout(rows: list[LabelledText], fraction: float, seed: int) -> tuple[list[LabelledText],
                                                                                 list[LabelledText]]:
    """A seeded split by group (example): (train, held-out)."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"heldout_fraction must be in [0, 1), got {fraction}")
    groups = sorted({row.group for row in rows})
    if fraction == 0.0:
        return rows, []
    if len(groups) < 2:
        raise InputError("a held-out split needs answers to at least 2 different prompts "
                         "(or set heldout_fraction: 0)")
    random.Random(seed).shuffle(groups)
    n_heldout = min(len(groups) - 1, max(1, round(len(groups) * fraction)))
    heldout = set(groups[:n_heldout])
    return [r for r in rows if r.group not in heldout], [r for r in rows if r.group in heldout]


def exact_api_auc(scores: list[float], rows: list[LabelledText]) -> float | None:
    """ROC-AUC of the reward model's score for "calls the reference API" among held-out samples."""
    from sklearn.metrics import roc_auc_score

    pairs = [(score, row.exact) for score, row in zip(scores, rows) if row.exact is not None]
    flags = [bool(flag) for _, flag in pairs]
    if not any(flags) or all(flags):
        return None
    return float(roc_auc_score(flags, [score for score, _ in pairs]))


def exact_api_within_prompt(scores: list[float], rows: list[LabelledText]) -> dict[str, Any]:
    """Among held-out answers to the same prompt, how often one that calls the reference API outscores
    one that does not (a tie counts a half, as in ROC-AUC): the choice best-of-n makes among a prompt's
    answers. The pooled ROC-AUC also compares answers across prompts, where a per-prompt offset of the
    score says nothing."""
    by_group: dict[str, list[tuple[float, bool]]] = {}
    for score, row in zip(scores, rows):
        if row.exact is not None:
            by_group.setdefault(row.group, []).append((score, bool(row.exact)))
    wins, pairs = 0.0, 0
    for answers in by_group.values():
        hits = [score for score, exact in answers if exact]
        misses = [score for score, exact in answers if not exact]
        pairs += len(hits) * len(misses)
        wins += sum(1.0 if hit > miss else 0.5 if hit == miss else 0.0 for hit in hits for miss in misses)
    return {"heldout_exact_api_within_prompt": wins / pairs if pairs else None,
            "heldout_exact_api_within_prompt_pairs": pairs}


def heldout_metrics(scores: list[float], labels: list[int]) -> dict[str, Any]:
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    predictions = [int(s > 0) for s in scores]
    metrics: dict[str, Any] = {
        "heldout_n": len(labels),
        "heldout_positive_rate": sum(labels) / len(labels),
        "heldout_accuracy": sum(p == y for p, y in zip(predictions, labels)) / len(labels),
        "heldout_balanced_accuracy": float(balanced_accuracy_score(labels, predictions)),
        # predicting the majority label everywhere scores this: the bar the model must clear
        "heldout_majority_accuracy": max(sum(labels), len(labels) - sum(labels)) / len(labels),
    }
    both = 0 < sum(labels) < len(labels)
    metrics["heldout_roc_auc"] = float(roc_auc_score(labels, scores)) if both else None
    return metrics
