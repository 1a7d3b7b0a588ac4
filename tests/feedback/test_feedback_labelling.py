"""Scores to labels: relative (per prompt, above a floor), absolute, quantile; and what the summary says."""

from __future__ import annotations

import pytest

from rlaif_code.feedback.labelling import agreement_with_outcomes, assign_labels, label_summary


def rows(*groups: list[float]) -> list[dict]:
    return [{"example_id": f"p{g}", "sample_id": i, "score": score, "n_answered": 1, "text": f"answer {g}.{i}"}
            for g, scores in enumerate(groups) for i, score in enumerate(scores)]


def labels(batch: list[dict]) -> list[str]:
    return [row["label"][0] for row in batch]  # "a" / "r"


def test_relative_accepts_only_the_best_of_each_prompt_above_the_floor() -> None:
    batch = rows([1.0, 0.85, 0.4], [0.9, 0.9], [0.6, 0.5], [0.95])
    assert assign_labels(batch, "relative", 0.85) == 0.85
    # p0: the reference-like answer beats a plausible one; p1: a tie above the floor accepts both;
    # p2: the best of two bad answers is still below the floor; p3: one answer, above it.
    assert labels(batch) == ["a", "r", "r", "a", "a", "r", "r", "a"]


def test_absolute_and_quantile_ignore_the_prompt() -> None:
    batch = rows([1.0, 0.85, 0.4], [0.9, 0.9])
    assign_labels(batch, "absolute", 0.85)
    assert labels(batch) == ["a", "a", "r", "a", "a"]
    assert assign_labels(batch, "quantile", 0.5) == 0.9  # ties at the cut accepted
    assert labels(batch) == ["a", "r", "r", "a", "a"]


def test_an_unscored_answer_is_rejected_and_takes_no_part_in_the_best() -> None:
    batch = rows([0.9, 0.2])
    batch.append({"example_id": "p0", "sample_id": 2, "score": 0.0, "n_answered": 0, "text": "x"})
    assign_labels(batch, "relative", 0.5)
    assert labels(batch) == ["a", "r", "r"]


def test_summary_counts_contrast_duplicates_and_balance() -> None:
    batch = rows([1.0, 0.85], [0.9, 0.9], [0.3, 0.2], [0.95])
    batch[3]["text"] = batch[2]["text"]  # p1's two answers are the same text
    assign_labels(batch, "relative", 0.85)
    summary = label_summary(batch)
    assert summary["prompts_with_several_answers"] == 3
    assert summary["contrast_rate"] == pytest.approx(1 / 3)  # only p0's answers got different labels
    assert summary["duplicate_answers"] == 1
    assert summary["label_balance"] == {"accepted": 4, "rejected": 3}
    assert (summary["prompts_all_accepted"], summary["prompts_all_rejected"]) == (2, 1)


def feedback_rows() -> list[dict]:
    """Four labelled answers: the two exact ones accepted, one of the inexact ones too; one of the
    inexact ones did not run (and one row was never asked whether it runs)."""
    def row(label: str, exact: str, runs: str | None) -> dict:
        answers = {"calls_needed_api": {"answer": exact, "by": "tool:api_matches_reference"}}
        if runs is not None:
            answers["code_executes"] = {"answer": runs, "by": "tool:executes"}
        return {"label": label, "answers": answers}

    return [row("accepted", "yes", "yes"), row("accepted", "yes", "yes"), row("accepted", "no", "yes"),
            row("rejected", "no", None)]


def test_labels_are_compared_with_the_outcomes_the_evaluation_measures() -> None:
    got = agreement_with_outcomes(feedback_rows(), {"calls_needed_api": "api_matches_reference",
                                                    "code_executes": "executes"})
    assert got["exact_api"] == {"rate": 0.5, "accepted_if_yes": 1.0, "accepted_if_no": 0.5,
                                "share_of_accepted": pytest.approx(2 / 3)}
    assert got["executes"]["rate"] == 1.0 and got["executes"]["accepted_if_no"] is None  # 3 asked, all ran
    assert "gorilla_correct" not in got  # no question measured it
