"""Rubric loading (errors name file, question and field), scoring and thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlaif_code.core.artifacts import InputError
from rlaif_code.feedback.rubric import (
    Answer,
    default_rubric_path,
    load_rubric,
    score_answers,
    threshold_value,
)
from rlaif_code.feedback.tools import TOOL_CHECKS


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rubric.yaml"
    path.write_text(text)
    return path


SHIPPED_RUBRICS = sorted((Path(__file__).parents[2] / "configs" / "rubrics").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_RUBRICS, ids=lambda p: p.name)
def test_each_shipped_rubric_loads_and_asks_only_registered_tools(path: Path) -> None:
    # PPO's online rubrics are read by reward_source feedback: only tool questions are asked there
    rubric = load_rubric(path)
    assert rubric.tool_questions and all(q.by in TOOL_CHECKS for q in rubric.tool_questions)
    assert len({q.id for q in rubric.questions}) == len(rubric.questions)


def test_the_exec_rubric_is_the_online_rubric_plus_executes() -> None:
    by_name = {p.stem: load_rubric(p) for p in SHIPPED_RUBRICS}
    online, with_exec = by_name["ppo-online"], by_name["ppo-online-exec"]
    assert [q.id for q in with_exec.questions] == [q.id for q in online.questions] + ["code_executes"]
    assert with_exec.questions[-1].by == "executes"


def test_default_rubric_ships_with_the_package_and_covers_the_paper_questions() -> None:
    rubric = load_rubric()
    assert default_rubric_path().is_file()
    ids = [q.id for q in rubric.questions]
    assert ids[:3] == ["answer_complete", "api_fits_domain", "code_executes"]  # the gates come first
    assert {"calls_needed_api", "api_arguments_match", "api_exists", "correct_imports"} <= set(ids)
    assert {q.by for q in rubric.tool_questions} <= set(TOOL_CHECKS.names())
    assert [q.id for q in rubric.llm_questions] == ["complete", "api_arguments_correct",
                                                    "explanation_matches_code", "logically_correct"]


@pytest.mark.parametrize("body, message", [
    ("questions:\n  - {id: q1, text: 'ok?', weight: 1}\n", "question 'q1': missing field 'by'"),
    ("questions:\n  - {id: q1, weight: 1, by: llm}\n", "question 'q1': missing field 'text'"),
    ("questions:\n  - {text: 'ok?', weight: 1, by: llm}\n", "question 1: missing field 'id'"),
    ("questions:\n  - {id: q1, text: 'ok?', weight: 1, by: pylint}\n", "question 'q1': field 'by' = 'pylint'"),
    ("questions:\n  - {id: q1, text: 'ok?', weight: -2, by: llm}\n", "question 'q1': field 'weight'"),
    ("questions:\n  - {id: q1, text: 'ok?', weight: 1, by: llm, colour: red}\n", "unknown field 'colour'"),
    ("questions:\n  - {id: q1, text: 'a?', weight: 1, by: llm}\n  - {id: q1, text: 'b?', weight: 1, by: llm}\n",
     "question 'q1': field 'id' is used twice"),
    ("name: empty\n", "missing field 'questions'"),
    ("questions: [\n", "not valid YAML"),
])
def test_bad_rubrics_name_the_file_question_and_field(tmp_path: Path, body: str, message: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(InputError) as err:
        load_rubric(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_unknown_tool_error_lists_the_known_checks(tmp_path: Path) -> None:
    path = write(tmp_path, "questions:\n  - {id: q1, text: 'ok?', weight: 1, by: pylint}\n")
    with pytest.raises(InputError, match="known: .*syntax"):
        load_rubric(path)


def test_score_is_weighted_share_of_yes_over_answered_questions(tmp_path: Path) -> None:
    rubric = load_rubric(write(tmp_path, "questions:\n"
                                         "  - {id: a, text: 'a?', weight: 3, by: syntax}\n"
                                         "  - {id: b, text: 'b?', weight: 1, by: llm}\n"
                                         "  - {id: c, text: 'c?', weight: 1, by: llm}\n"
                                         "  - {id: d, text: 'd?', weight: 2, by: llm}\n"))
    answers = {
        "a": Answer("yes", None, "tool:syntax"),
        "b": Answer("no", 0.2, "openai:m"),  # a probability counts as itself
        "c": Answer("unparseable", None, "openai:m"),  # left out of the score
        # d: not asked (tools judge): left out too
    }
    scored = score_answers(rubric, answers)
    assert scored.raw_score == pytest.approx(3 + 0.2)
    assert scored.answered_weight == 4
    assert scored.score == pytest.approx(3.2 / 4)
    assert (scored.n_answered, scored.n_unparseable, scored.n_skipped) == (2, 1, 1)


def test_no_answered_question_scores_zero(tmp_path: Path) -> None:
    rubric = load_rubric(write(tmp_path, "questions:\n  - {id: a, text: 'a?', weight: 1, by: llm}\n"))
    scored = score_answers(rubric, {"a": Answer("unparseable", None, "hf:x")})
    assert scored.score == 0.0 and scored.n_answered == 0


@pytest.mark.parametrize("with_llm", [False, True])
def test_default_weights_put_each_gate_below_the_floor_and_a_plausible_api_above(with_llm: bool) -> None:
    """The failures the labels must reject (no code, the wrong kind of API, code that does not run,
    an invented API) score below the 0.85 floor whoever answers the soft questions; a right-domain
    API other than the reference stays above it (relative labels then rank it below the reference)."""
    rubric = load_rubric()
    asked = rubric.questions if with_llm else rubric.tool_questions
    yes = {q.id: Answer("yes", None, "x") for q in asked}

    def score(**noes: str) -> float:
        return score_answers(rubric, {**yes, **{qid: Answer("no", None, "x") for qid in noes}}).score

    not_the_reference = dict(calls_needed_api="no", api_arguments_match="no")
    assert score(answer_complete="no") < 0.85
    assert score(api_fits_domain="no", **not_the_reference) < 0.85
    assert score(code_executes="no") < 0.85
    assert score(api_exists="no", api_fits_domain="no", **not_the_reference) < 0.85
    assert score(**not_the_reference) >= 0.85
    assert score() > score(**not_the_reference)
    if with_llm:
        assert score(complete="no") >= 0.85


def test_thresholds_absolute_and_quantile() -> None:
    scores = [0.1, 0.5, 0.5, 0.9]
    assert threshold_value(scores, "absolute", 0.85) == 0.85
    cut = threshold_value(scores, "quantile", 0.5)
    assert cut == 0.5  # an observed score, so both ties at 0.5 are accepted
    assert sum(s >= cut for s in scores) == 3
    with pytest.raises(InputError):
        threshold_value(scores, "quantile", 1.5)
