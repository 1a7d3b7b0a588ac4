"""What every judge shares: requests, stats, the judge protocol, and reading yes/no from a reply."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from rlaif_code.feedback.cache import JudgeCache, prompt_hash
from rlaif_code.feedback.rubric import Question

SYSTEM_PROMPT = ("You review answers to programming tasks that must call a machine-learning API "
                 "(Hugging Face, TensorFlow Hub or PyTorch Hub). Judge strictly and answer only what is asked.")


class JudgeError(RuntimeError):
    """A judge could not get its answers (server down, refusing, misconfigured, replying garbage).

    Its message is one line, meant to be shown as is. `pending_keys`: when raised while
    sending (`ask_all`), the keys of the requests still without a reply.
    """

    pending_keys: frozenset[str] = frozenset()


def one_line(text: Any, limit: int = 300) -> str:
    """`text` on one line (whitespace runs collapsed), cut to `limit` characters: for server-provided text."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


@dataclass
class JudgeSubject:
    """What the judge is shown about one answer."""

    instruction: str
    answer_text: str
    reference_api: dict[str, Any] | None = None  # shown as documentation when not None


@dataclass
class JudgeRequest:
    key: str  # hash of the exact request: the cache key
    messages: list[dict[str, str]]
    question_ids: list[str]  # one, or several answered as JSON


@dataclass
class JudgeStats:
    requests: int = 0  # API calls made, retries included
    http_requests: int = 0  # HTTP requests seen on the wire (openai judge)
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    paths: dict[str, int] = field(default_factory=dict)  # how replies were read: logprobs/text/json/logits
    # Failed attempts by kind: http_<status>, timeout, connection, and replies that could not be
    # read: malformed_json (not JSON, or not a JSON object), no_choices, missing_fields.
    errors: dict[str, int] = field(default_factory=dict)

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "http_requests": self.http_requests, "retries": self.retries,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": round(self.cost_usd, 6), "reply_paths": dict(self.paths),
                "errors": dict(sorted(self.errors.items()))}


OnResult = Callable[[JudgeRequest, dict[str, Any]], None]


class Judge(Protocol):
    kind: str
    model: str
    asks_llm: bool
    stats: JudgeStats

    def requests_for(self, subject: JudgeSubject, questions: list[Question]) -> list[JudgeRequest]: ...

    def answer(self, requests: list[JudgeRequest], on_result: OnResult) -> None: ...

    def close(self) -> None: ...


# name -> factory(feedback-like config with .openai / .hf sections) -> Judge


def _render_reference(api: dict[str, Any]) -> str:
    keep = ("api_call", "api_name", "domain", "description", "api_arguments")
    shown = {k: api[k] for k in keep if api.get(k)}
    return json.dumps(shown, ensure_ascii=False)


def subject_block(subject: JudgeSubject, max_chars: int = 4000) -> str:
    answer = subject.answer_text.strip()
    if len(answer) > max_chars:
        answer = answer[:max_chars] + " [...]"
    parts = [f"### Task\n{subject.instruction.strip()}"]
    if subject.reference_api:
        parts.append(f"### Documentation of the API the task expects\n{_render_reference(subject.reference_api)}")
    parts.append(f"### Answer to review\n{answer}")
    return "\n\n".join(parts)


def question_messages(subject: JudgeSubject, question: Question) -> list[dict[str, str]]:
    user = (f"{subject_block(subject)}\n\n### Question\n{question.text}\n"
            "Reply with exactly one word: yes or no.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def batch_messages(subject: JudgeSubject, questions: list[Question]) -> list[dict[str, str]]:
    listed = "\n".join(f"- {q.id}: {q.text}" for q in questions)
    user = (f"{subject_block(subject)}\n\n### Questions\n{listed}\n\n"
            "Reply with only a JSON object that maps each question id to \"yes\" or \"no\", e.g. "
            f"{json.dumps({q.id: 'yes' for q in questions[:2]})}.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def request_key(kind: str, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    return prompt_hash({"judge": kind, "model": model, "messages": messages, "params": params})


def per_question_requests(kind: str, model: str, subject: JudgeSubject, questions: list[Question],
                          params: dict[str, Any]) -> list[JudgeRequest]:
    """One request per rubric question (the paper's way of asking), each with its cache key."""
    out = []
    for q in questions:
        messages = question_messages(subject, q)
        out.append(JudgeRequest(request_key(kind, model, messages, params), messages, [q.id]))
    return out


_LEAD_RE = re.compile(r"^[\s\"'`*_>#:.\-\[\(]*(?:(?:final\s+)?answer\s*[:\-]?\s*)?[\s\"'`*_]*", re.I)
_WORD_RE = re.compile(r"\b(yes|no)\b", re.I)


def parse_yes_no(text: str | None) -> str:
    """yes / no / unparseable from a reply's text."""
    if not text:
        return "unparseable"
    rest = _LEAD_RE.sub("", text.strip(), count=1)
    first = re.match(r"(yes|no)\b", rest, re.I)
    if first:
        return first.group(1).lower()
    words = {w.lower() for w in _WORD_RE.findall(text)}
    return words.pop() if len(words) == 1 else "unparseable"


def token_word(token: str) -> str:
    """A token reduced to the word it spells: ' Yes' -> 'yes', 'NO.' -> 'no'."""
    return re.sub(r"[^a-z]", "", token.lower())


def p_yes_from_logprobs(candidates: list[tuple[str, float]]) -> tuple[float, float] | None:
    """(P(yes), yes+no probability mass) from (token, logprob) pairs, None when neither word is there."""
    p_yes = sum(math.exp(lp) for tok, lp in candidates if token_word(tok) == "yes")
    p_no = sum(math.exp(lp) for tok, lp in candidates if token_word(tok) == "no")
    if p_yes + p_no <= 0.0:
        return None
    return p_yes / (p_yes + p_no), p_yes + p_no


_JSON_PAIR_RE = re.compile(r"[\"']?([A-Za-z_][\w\-]*)[\"']?\s*:\s*[\"']?(yes|no|true|false)\b", re.I)


def parse_json_answers(text: str | None, question_ids: list[str]) -> dict[str, str]:
    """question id -> yes/no/unparseable from a JSON-ish reply; a missing id is unparseable."""
    found: dict[str, str] = {}
    text = text or ""
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        try:
            obj = json.loads(text[start:end + 1])
            if isinstance(obj, dict):
                for key, value in obj.items():
                    if isinstance(value, bool):
                        found[str(key)] = "yes" if value else "no"
                    elif isinstance(value, str):
                        found[str(key)] = parse_yes_no(value)
        except json.JSONDecodeError:
            pass
    if not found:  # not valid JSON: read "id": "yes" pairs wherever they are
        for key, value in _JSON_PAIR_RE.findall(text):
            found.setdefault(key, "yes" if value.lower() in ("yes", "true") else "no")
    return {qid: found.get(qid, "unparseable") for qid in question_ids}


def ask_all(judge: Judge, cache: JudgeCache | None, requests: list[JudgeRequest]) -> dict[str, dict[str, Any]]:
    """Replies for `requests` by key: cached ones read, the rest sent and cached as they arrive.

    If sending fails part-way, every reply received so far is already in the cache and
    the `JudgeError` propagates, its `pending_keys` the requests still unanswered.
    """
    unique = {req.key: req for req in requests}
    results: dict[str, dict[str, Any]] = {}
    if cache is not None:
        results.update(cache.get_many(judge.kind, judge.model, list(unique)))
    missing = [req for key, req in unique.items() if key not in results]

    if not missing:
        return results
    from rlaif_code.core.progress import progress_bar

    with progress_bar(f"judge {judge.kind}:{judge.model}", len(missing)) as bar:
        def on_result(req: JudgeRequest, value: dict[str, Any]) -> None:
            results[req.key] = value
            if cache is not None:
                cache.put(judge.kind, judge.model, req.key, value)
            bar.advance()

        try:
            judge.answer(missing, on_result)
        except JudgeError as err:
            err.pending_keys = frozenset(key for key in unique if key not in results)
            raise
    return results
