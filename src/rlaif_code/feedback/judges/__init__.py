"""LLM judges: who answers a rubric's `llm` questions, and how a reply becomes yes/no.

Judges live in `JUDGES` (a Registry: an unknown name is an error listing the known ones):

* `openai` -- any OpenAI-compatible /v1/chat/completions server (OpenAI, vLLM, Ollama,
  llama.cpp's server) through the official async client. See `judges.openai_judge`.
* `hf` -- a local transformers causal LM; P(yes) from the next-token logits. See
  `judges.hf_judge`.
* `tools` -- no LLM: `llm` questions are not asked and drop out of the score (which is
  normalised over the questions that were answered; see `rubric`), so the labels come
  from the tool checks alone. The cheap, deterministic, offline choice.

Every judge turns (answer, question) into a chat request, one per question (as the
paper asks GPT-3.5) or, where the judge supports it, one per answer with all of its
`llm` questions answered as a JSON object. `ask_all` sends only the requests the
cache does not already hold and stores each reply in the cache the moment it arrives.

Reading a reply. With probabilities (logprobs of the first token, or the next-token
logits), P(yes) = p(yes tokens) / (p(yes tokens) + p(no tokens)), the variants
"yes", " Yes", "YES", ... pooled; the answer is yes when P(yes) >= 0.5. From text:
the reply's first word when it is yes or no (after quotes, Markdown and an "Answer:"
prefix), else the only one of the two words the reply contains; anything else is
`unparseable`, left out of the score and counted in the stage summary.
"""

from __future__ import annotations

from typing import Any, Callable

from rlaif_code.core.registry import Registry
from rlaif_code.feedback.judges.base import (
    SYSTEM_PROMPT,
    Judge,
    JudgeError,
    JudgeRequest,
    JudgeStats,
    JudgeSubject,
    OnResult,
    ask_all,
    batch_messages,
    p_yes_from_logprobs,
    parse_json_answers,
    parse_yes_no,
    per_question_requests,
    question_messages,
    request_key,
    subject_block,
    token_word,
)
from rlaif_code.feedback.rubric import Question

JUDGES: Registry[Callable[[Any], Judge]] = Registry("judge")


class ToolsOnlyJudge:
    """The `tools` judge: asks no LLM, so `llm` questions go unanswered and drop out of the score."""

    kind = "tools"
    model = "none"
    asks_llm = False

    def __init__(self) -> None:
        self.stats = JudgeStats()

    def requests_for(self, subject: JudgeSubject, questions: list[Question]) -> list[JudgeRequest]:
        return []

    def answer(self, requests: list[JudgeRequest], on_result: OnResult) -> None:
        if requests:
            raise JudgeError("the 'tools' judge cannot answer llm questions")

    def close(self) -> None:
        pass


@JUDGES.register("tools")
def _make_tools_judge(cfg: Any) -> Judge:
    return ToolsOnlyJudge()


@JUDGES.register("openai")
def _make_openai_judge(cfg: Any) -> Judge:
    from rlaif_code.feedback.judges.openai_judge import OpenAIJudge

    return OpenAIJudge(cfg.openai)


@JUDGES.register("hf")
def _make_hf_judge(cfg: Any) -> Judge:
    from rlaif_code.feedback.judges.hf_judge import HFJudge

    return HFJudge(cfg.hf)


def make_judge(name: str, cfg: Any) -> Judge:
    return JUDGES.get(name)(cfg)


__all__ = [
    "SYSTEM_PROMPT",
    "JudgeError",
    "JudgeSubject",
    "JudgeRequest",
    "JudgeStats",
    "OnResult",
    "Judge",
    "subject_block",
    "question_messages",
    "batch_messages",
    "request_key",
    "per_question_requests",
    "parse_yes_no",
    "token_word",
    "p_yes_from_logprobs",
    "parse_json_answers",
    "ask_all",
    "JUDGES",
    "ToolsOnlyJudge",
    "make_judge",
]
