"""Rubrics: binary questions, who answers each, and how answers become a score and a label.

A rubric is a YAML file::

    name: default
    questions:
      - id: no_syntax_errors          # unique; names the answer in the output rows
        text: Is the code free of syntax errors?   # phrased so that "yes" is good
        weight: 1.0                   # > 0; its share of the score
        by: syntax                    # `llm`, or a tool check (rlaif_code.feedback.tools)

Every field is required: a missing or mistyped one is an error naming the file, the
question id and the field, and so is a `by` that is neither `llm` nor a registered
tool check. The default rubric ships inside the package (`default_rubric.yaml`).

Score. The score of an answer is the weighted share of yes among the questions that
got a usable answer::

    score = sum(weight * y) / sum(weight)     over answered questions

where y is 1 for yes and 0 for no, or the judge's P(yes) when it gives a probability
(an LLM read through logprobs or logits; tools always give 0 or 1). A question whose
answer is `unparseable` (neither yes nor no), or that nobody asked (an `llm` question
under the `tools` judge), is left out of both sums instead of counting as no: the
score stays in [0, 1] whoever answered, so one threshold works for the tools-only,
LLM-only and hybrid set-ups, and a judge that fails to answer does not silently
reject an answer. `raw_score` = sum(weight * y) is kept as well (the paper's count of
yes when every weight is 1). An answer with no answered question at all scores 0 and
is rejected; the stage's summary counts those as `unscored`.

Label (`labelling.py`). `relative`, the default: accepted when the score reaches the floor
`threshold` (0.85) and no answer to the same prompt scored higher; `absolute`: score >=
threshold; `quantile`: the threshold is that quantile of the batch's scores (`threshold: 0.5`
accepts the upper half, ties at the cut included; answers with no answered question take no
part in the quantile).

The default rubric's weights and threshold are explained in `default_rubric.yaml`: three gates
(all five fields, the domain the task needs, code that runs) each reject an answer on their own under
the 0.85 floor, and within one prompt the relative labels (`labelling.py`) accept only the best
answers, so that naming the reference API decides between answers that pass every gate. On the full
TorchHub training split (3 samples of each of 753 prompts from the SFT model) this accepted 48.4% of
the answers with a contrast rate of 60.4%; variants that make the exact API or BM25's task fit
(`api_fits_task`) a gate accepted 0.4-5.7% (the SFT model names the reference API in 2.1% of its
answers, and BM25's top 5 holds the called API for 5.4%), too few positives for a reward model.
Check `accepted_fraction` and `contrast_rate` in the stage summary either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml

from rlaif_code.core.artifacts import InputError

LLM = "llm"
REQUIRED_FIELDS = ("id", "text", "weight", "by")

AnswerValue = Literal["yes", "no", "unparseable"]


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    weight: float
    by: str  # "llm" or a tool check name

    @property
    def is_llm(self) -> bool:
        return self.by == LLM


@dataclass(frozen=True)
class Rubric:
    name: str
    questions: tuple[Question, ...]
    source: str = ""

    @property
    def llm_questions(self) -> list[Question]:
        return [q for q in self.questions if q.is_llm]

    @property
    def tool_questions(self) -> list[Question]:
        return [q for q in self.questions if not q.is_llm]

    def question(self, question_id: str) -> Question:
        for q in self.questions:
            if q.id == question_id:
                return q
        raise KeyError(question_id)


def default_rubric_path() -> Path:
    return Path(str(resources.files("rlaif_code.feedback") / "default_rubric.yaml"))


def judge_check_rubric_path() -> Path:
    """Every tool-verifiable question: what `rlaif judge-check` asks by default."""
    return Path(str(resources.files("rlaif_code.feedback") / "judge_check_rubric.yaml"))


def _question(raw: Any, index: int, source: str, tool_names: Iterable[str]) -> Question:
    where = f"{source}: question {index + 1}"
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a mapping with fields {', '.join(REQUIRED_FIELDS)}")
    qid = raw.get("id")
    if isinstance(qid, str) and qid.strip():
        where = f"{source}: question '{qid}'"
    for name in REQUIRED_FIELDS:
        if name not in raw or raw[name] is None or raw[name] == "":
            raise InputError(f"{where}: missing field '{name}'")
    unknown = sorted(set(raw) - set(REQUIRED_FIELDS))
    if unknown:
        raise InputError(f"{where}: unknown field '{unknown[0]}' (fields: {', '.join(REQUIRED_FIELDS)})")
    if not isinstance(qid, str):
        raise InputError(f"{where}: field 'id' must be a string, got {qid!r}")
    if not isinstance(raw["text"], str):
        raise InputError(f"{where}: field 'text' must be a string")
    weight = raw["weight"]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise InputError(f"{where}: field 'weight' must be a positive number, got {weight!r}")
    by = raw["by"]
    known = sorted(tool_names)
    if not isinstance(by, str) or (by != LLM and by not in known):
        raise InputError(f"{where}: field 'by' = {by!r} is neither 'llm' nor a known tool check "
                         f"(known: {', '.join(known)})")
    return Question(id=qid.strip(), text=raw["text"].strip(), weight=float(weight), by=by)


def parse_rubric(data: Any, source: str) -> Rubric:
    from rlaif_code.feedback.tools import TOOL_CHECKS

    if not isinstance(data, dict):
        raise InputError(f"{source}: a rubric must be a mapping with 'questions'")
    unknown = sorted(set(data) - {"name", "questions"})
    if unknown:
        raise InputError(f"{source}: unknown top-level field '{unknown[0]}' (fields: name, questions)")
    raw_questions = data.get("questions")
    if not isinstance(raw_questions, list) or not raw_questions:
        raise InputError(f"{source}: missing field 'questions' (a non-empty list)")
    questions = [_question(raw, i, source, TOOL_CHECKS.names()) for i, raw in enumerate(raw_questions)]
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise InputError(f"{source}: question '{q.id}': field 'id' is used twice")
        seen.add(q.id)
    return Rubric(name=str(data.get("name") or Path(source).stem), questions=tuple(questions), source=source)


def rubric_digest(path: str | Path | None = None) -> str:
    """sha256 of the rubric file's bytes: its questions and weights decide the labels, so an edit
    to the file must invalidate the labels made under it, though the configured path is unchanged."""
    import hashlib

    path = Path(path) if path else default_rubric_path()
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def load_rubric(path: str | Path | None = None) -> Rubric:
    """The rubric at `path`, or the packaged default when `path` is None."""
    path = Path(path) if path else default_rubric_path()
    if not path.is_file():
        raise InputError(f"rubric file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML: {err}") from err
    return parse_rubric(data, str(path))


@dataclass
class Answer:
    """One question's answer for one sample."""

    answer: AnswerValue
    p_yes: float | None  # None where the answerer gives no probability
    by: str  # "tool:<check>", "<judge kind>:<model>"
    detail: str | None = None  # why a tool said no, or the judge's raw text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"answer": self.answer, "p_yes": self.p_yes, "by": self.by}
        if self.detail:
            out["detail"] = self.detail
        return out


def yes_value(answer: Answer) -> float | None:
    """The answer's contribution to the score, or None when it is left out."""
    if answer.answer == "unparseable":
        return None
    if answer.p_yes is not None:
        return float(answer.p_yes)
    return 1.0 if answer.answer == "yes" else 0.0


@dataclass
class Score:
    score: float  # weighted share of yes over answered questions, in [0, 1]
    raw_score: float  # sum of weight x yes
    answered_weight: float
    n_answered: int
    n_unparseable: int
    n_skipped: int  # llm questions nobody was asked


def score_answers(rubric: Rubric, answers: dict[str, Answer]) -> Score:
    raw, weight_sum, n_answered, n_unparseable, n_skipped = 0.0, 0.0, 0, 0, 0
    for q in rubric.questions:
        answer = answers.get(q.id)
        if answer is None:
            n_skipped += 1
            continue
        value = yes_value(answer)
        if value is None:
            n_unparseable += 1
            continue
        raw += q.weight * value
        weight_sum += q.weight
        n_answered += 1
    score = raw / weight_sum if weight_sum > 0 else 0.0
    return Score(score=score, raw_score=raw, answered_weight=weight_sum, n_answered=n_answered,
                 n_unparseable=n_unparseable, n_skipped=n_skipped)


def threshold_value(scores: list[float], mode: Literal["absolute", "quantile"], threshold: float) -> float:
    """The score an answer must reach to be accepted."""
    if mode == "absolute":
        return threshold
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"a quantile threshold must be in [0, 1], got {threshold}")
    if not scores:
        return threshold
    import numpy as np

    # "lower" picks an observed score, so ties at the cut are all accepted.
    return float(np.quantile(np.asarray(scores, dtype=float), threshold, method="lower"))
