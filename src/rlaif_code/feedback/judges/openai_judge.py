"""The `openai` judge: any OpenAI-compatible chat-completions server, asked asynchronously.

Works with OpenAI itself, vLLM, Ollama and llama.cpp's server (`python -m
llama_cpp.server`), through the official `openai` package's `AsyncOpenAI`.

Options (`OpenAIJudgeConfig`, the `openai:` section of the feedback config):

* `base_url`, `model`: the server; `base_url` None means $OPENAI_BASE_URL, else OpenAI.
* `api_key`: None means the variable named by `api_key_env` (default $OPENAI_API_KEY);
  local servers that check no key get a placeholder. Prefer the environment: a key
  put in the config is replaced by "***" in the stage record.
* `answer_mode`: `auto` asks for the first token's `top_logprobs` and reads P(yes)
  from them when the server returns them, else reads the text; `logprobs` insists
  (a reply without them is read as text but counted); `text` never asks for them.
  In `auto`, a server that rejects the logprobs parameters (HTTP 400) is asked again
  without them, once, and from then on.
* `batch_questions`: false asks one question per request, as the paper; true asks all
  of an answer's `llm` questions in one request answered as a JSON object (fewer
  requests and prompt tokens; no probabilities).
* `concurrency` (an asyncio.Semaphore), `timeout_s` per request, `max_retries` with
  exponential backoff (`backoff_s` * 2^attempt, capped at `max_backoff_s`, jittered) on
  429, 408, 409, 5xx, timeouts, refused or dropped connections, and replies that cannot
  be read: a 200 whose body is not JSON or is cut mid-JSON (`malformed_json`), has no
  `choices` (`no_choices`), or lacks what is read from it (`missing_fields`: the first
  choice's message and its content, a string or null; in `logprobs` mode the logprobs'
  `content` list of {token, logprob, top_logprobs}). Other 4xx fail at once. Failed
  attempts are counted by kind in the stats (`errors`). When a request has used up its
  retries the run stops with a one-line `JudgeError` naming the server and the last
  error; every reply received before that is already cached.
* Token usage is summed from the replies' `usage`; `price_input_per_mtok` and
  `price_output_per_mtok` (USD per million tokens; defaults: gpt-3.5-turbo-0125's
  list prices) give the cost estimate reported in the stage metrics.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
from dataclasses import dataclass
from typing import Any, Literal

from rlaif_code.core.config import check, check_at_least
from rlaif_code.feedback.judges.base import (
    JudgeError,
    JudgeRequest,
    JudgeStats,
    JudgeSubject,
    OnResult,
    batch_messages,
    one_line,
    p_yes_from_logprobs,
    parse_json_answers,
    parse_yes_no,
    per_question_requests,
    request_key,
)
from rlaif_code.feedback.rubric import Question

LOCAL_PLACEHOLDER_KEY = "sk-no-key-needed"


@dataclass
class OpenAIServer:
    """Which OpenAI-compatible server and model, and its key: shared by every client of the server."""

    base_url: str | None = None  # None: $OPENAI_BASE_URL, else api.openai.com
    model: str = "gpt-3.5-turbo"  # the model the server is asked for
    # None: the variable named by api_key_env (preferred); a key set here shows as *** in records.
    api_key: str | None = None
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the API key


@dataclass
class OpenAIJudgeConfig(OpenAIServer):
    # auto: read P(yes) from the first token's logprobs when the server returns them, else the
    # text; logprobs: insist on them (a reply without is read as text, and counted); text: never ask.
    answer_mode: Literal["auto", "logprobs", "text"] = "auto"
    top_logprobs: int = 10  # alternatives asked for the first token, where yes and no are looked up
    # Ask all of an answer's llm questions in one request answered as JSON (fewer requests and
    # tokens, no probabilities) instead of one question per request as in the paper.
    batch_questions: bool = False
    max_tokens: int = 3  # per-question replies: "Yes", "No."
    max_tokens_json: int = 256  # batch_questions replies
    temperature: float = 0.0  # sampling temperature of the judge
    seed: int | None = 0  # sent with each request (servers that support it reply reproducibly); None: not sent
    concurrency: int = 8  # requests in flight at once
    timeout_s: float = 60.0  # seconds per request
    # retries of a request on 408, 409, 429, 5xx, timeouts, connection failures and unreadable replies
    max_retries: int = 4
    backoff_s: float = 1.0  # first wait before a retry, doubled each time (jittered)
    max_backoff_s: float = 30.0  # longest wait between retries
    price_input_per_mtok: float = 0.5  # USD per million prompt tokens, for the cost estimate
    price_output_per_mtok: float = 1.5  # USD per million completion tokens, for the cost estimate

    def __post_init__(self) -> None:
        check_at_least(self, 1, "top_logprobs", "max_tokens", "max_tokens_json", "concurrency")
        check_at_least(self, 0, "max_retries", "backoff_s", "max_backoff_s", "temperature", "price_input_per_mtok",
                       "price_output_per_mtok")
        check(self.timeout_s > 0, "timeout_s", f"must be positive, got {self.timeout_s!r}")


def _retryable_status(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


class BadReply(Exception):
    """A reply that arrived but cannot be read; `kind`: malformed_json, no_choices or missing_fields."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def _given(obj: Any, name: str) -> bool:
    """Whether the reply set field `name` of `obj` (a client model built without validation)."""
    return name in (getattr(obj, "model_fields_set", None) or ())


def _is_logprob(value: Any) -> bool:
    # A log-probability is a number <= 0; a little above 0 is rounding, far above is garbage
    # (and would overflow exp).
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value) \
        and value <= 1.0


def first_choice(response: Any) -> tuple[Any, str]:
    """The first choice of a chat completion and its text; `BadReply` when the reply has neither."""
    if not hasattr(response, "choices"):  # the client hands back what is not a JSON object as is
        shown = one_line(response if isinstance(response, str) else json.dumps(response, default=str), 80)
        raise BadReply("malformed_json", f"the body is not a JSON object: {shown!r}")
    choices = response.choices
    if not isinstance(choices, list) or not choices:
        raise BadReply("no_choices", "no 'choices'" if choices is None
                       else f"'choices' is {one_line(repr(choices), 80)}")
    choice = choices[0]
    message = getattr(choice, "message", None)
    if message is None or not _given(message, "content"):
        raise BadReply("missing_fields", "the first choice has no message" if message is None
                       else "the first choice's message has no 'content'")
    content = message.content
    if content is not None and not isinstance(content, str):
        raise BadReply("missing_fields", f"the message's 'content' is not text: {one_line(repr(content), 80)}")
    return choice, content or ""  # null content (e.g. a refusal) reads as an empty, unparseable reply


def logprob_candidates(choice: Any, strict: bool) -> list[tuple[str, float]] | None:
    """(token, logprob) pairs for the first token, None when the reply has none.

    A reply without logprobs (null, or without token `content`) has none; in `strict`
    (`logprobs`) mode a logprobs object without `content` is a `BadReply`, and in any mode
    token logprobs that are there but broken are.
    """
    logprobs = getattr(choice, "logprobs", None)
    if logprobs is None:
        return None
    content = getattr(logprobs, "content", None)
    if content is None:
        if strict and not _given(logprobs, "content"):
            raise BadReply("missing_fields", "the logprobs have no token 'content'")
        return None
    if not isinstance(content, list):
        raise BadReply("missing_fields", "the logprobs' 'content' is not a list")
    if not content:
        return None
    first = content[0]
    top = getattr(first, "top_logprobs", None) or []
    if not isinstance(top, list):
        raise BadReply("missing_fields", "the first token's 'top_logprobs' is not a list")
    entries = top or [first]
    candidates = [(getattr(t, "token", None), getattr(t, "logprob", None)) for t in entries]
    if not all(isinstance(tok, str) and _is_logprob(lp) for tok, lp in candidates):
        raise BadReply("missing_fields", "a token logprob without a 'token' string or a 'logprob' number")
    return candidates


BAD_REPLY_KINDS = ("malformed_json", "no_choices", "missing_fields")


def server_failure(err: Exception) -> tuple[str, str] | None:
    """(kind, description) of a failure other than an HTTP error status that a retry may cure: a
    timeout, a failed or dropped connection, a reply that cannot be read. None: not the server's."""
    import openai
    import pydantic

    if isinstance(err, openai.APITimeoutError):
        return "timeout", f"{type(err).__name__}: {one_line(err)}"
    if isinstance(err, openai.APIConnectionError):
        cause = f" ({one_line(err.__cause__, 120)})" if err.__cause__ else ""
        return "connection", f"{type(err).__name__}: {one_line(err)}{cause}"
    if isinstance(err, (json.JSONDecodeError, UnicodeDecodeError)):  # a 200 cut mid-JSON, or not JSON at all
        err = BadReply("malformed_json", f"the body is not valid JSON ({one_line(err, 120)})")
    elif isinstance(err, openai.APIResponseValidationError):  # only with strict response validation
        body = err.body
        kind = ("malformed_json" if not isinstance(body, dict) else
                "no_choices" if not body.get("choices") else "missing_fields")
        err = BadReply(kind, one_line(err.message, 120))
    elif isinstance(err, pydantic.ValidationError):
        err = BadReply("missing_fields", one_line(err, 120))
    if isinstance(err, BadReply):
        return err.kind, f"unreadable reply: {err}"
    return None


def _token_count(value: Any) -> int:
    """A usage figure; one the reply garbles counts 0 (it only feeds the cost estimate)."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError, OverflowError):
        return 0


class OpenAIJudge:
    kind = "openai"
    asks_llm = True

    def __init__(self, cfg: OpenAIJudgeConfig) -> None:
        if cfg.concurrency < 1:
            raise JudgeError(f"openai.concurrency must be >= 1, got {cfg.concurrency}")
        self.cfg = cfg
        self.model = cfg.model
        self.base_url = cfg.base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = cfg.api_key or os.environ.get(cfg.api_key_env)
        if not key:
            if self.base_url is None:
                raise JudgeError(f"the openai judge needs an API key: set ${cfg.api_key_env} "
                                 "(or openai.base_url for a local server that needs none)")
            key = LOCAL_PLACEHOLDER_KEY
        self._api_key = key
        self.stats = JudgeStats()
        self._logprobs_refused = False

    # -- requests -------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        """What besides the messages decides the reply: part of the cache key."""
        if self.cfg.batch_questions:
            return {"mode": "json", "max_tokens": self.cfg.max_tokens_json, "temperature": self.cfg.temperature,
                    "seed": self.cfg.seed}
        return {"mode": self.cfg.answer_mode, "max_tokens": self.cfg.max_tokens,
                "temperature": self.cfg.temperature, "seed": self.cfg.seed,
                "top_logprobs": self.cfg.top_logprobs if self.cfg.answer_mode != "text" else None}

    def requests_for(self, subject: JudgeSubject, questions: list[Question]) -> list[JudgeRequest]:
        if not questions:
            return []
        params = self._params()
        if self.cfg.batch_questions:
            messages = batch_messages(subject, questions)
            return [JudgeRequest(request_key(self.kind, self.model, messages, params), messages,
                                 [q.id for q in questions])]
        return per_question_requests(self.kind, self.model, subject, questions, params)

    # -- sending --------------------------------------------------------------------------
    def answer(self, requests: list[JudgeRequest], on_result: OnResult) -> None:
        if requests:
            asyncio.run(self._answer_all(requests, on_result))

    def _client(self) -> Any:
        import openai

        async def count_request(request: Any) -> None:
            self.stats.http_requests += 1

        # max_retries=0: retries are ours, so they are counted, logged and bounded here.
        http_client = openai.DefaultAsyncHttpxClient(event_hooks={"request": [count_request]})
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, timeout=self.cfg.timeout_s,
                                  max_retries=0, http_client=http_client)

    async def _answer_all(self, requests: list[JudgeRequest], on_result: OnResult) -> None:
        client = self._client()
        limit = asyncio.Semaphore(self.cfg.concurrency)

        async def one(req: JudgeRequest) -> None:
            async with limit:
                value = await self._ask(client, req)
            on_result(req, value)  # cached now, before anything else can fail

        tasks = [asyncio.create_task(one(req)) for req in requests]
        try:
            for finished in asyncio.as_completed(tasks):
                await finished
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            await client.close()

    def _create_kwargs(self, req: JudgeRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, "messages": req.messages,
                                  "temperature": self.cfg.temperature}
        if self.cfg.seed is not None:
            kwargs["seed"] = self.cfg.seed
        if self.cfg.batch_questions:
            kwargs["max_tokens"] = self.cfg.max_tokens_json
        else:
            kwargs["max_tokens"] = self.cfg.max_tokens
            if self.cfg.answer_mode != "text" and not self._logprobs_refused:
                kwargs["logprobs"] = True
                kwargs["top_logprobs"] = self.cfg.top_logprobs
        return kwargs

    def _where(self) -> str:
        return self.base_url or "api.openai.com"

    def _failed_attempt(self, err: Exception, kwargs: dict[str, Any]) -> tuple[str, str] | None:
        """(kind, description) of a failed attempt worth retrying, counted in the stats; None when the
        request is to be sent again at once (logprobs refused); a `JudgeError` when it is final.
        Anything not from the server is re-raised."""
        import openai

        if not isinstance(err, openai.APIStatusError):
            failure = server_failure(err)
            if failure is None:
                raise err
            self.stats.count_error(failure[0])
            return failure
        self.stats.count_error(f"http_{err.status_code}")
        if err.status_code == 400 and "logprobs" in kwargs and self.cfg.answer_mode == "auto":
            self._logprobs_refused = True  # the server rejects the logprobs parameters: read text from now on
            return None
        if not _retryable_status(err.status_code):
            raise JudgeError(f"{self._where()}: model '{self.model}': HTTP {err.status_code}: "
                             f"{one_line(err.message)}") from err
        return f"http_{err.status_code}", f"HTTP {err.status_code}: {one_line(err.message)}"

    async def _ask(self, client: Any, req: JudgeRequest) -> dict[str, Any]:
        failures = 0
        while True:
            kwargs = self._create_kwargs(req)
            self.stats.requests += 1
            try:
                response = await client.chat.completions.create(**kwargs)
                return self._read(response, req)
            except Exception as err:  # sorted by _failed_attempt, which re-raises what is not the server's
                failure = self._failed_attempt(err, kwargs)
            if failure is None:
                continue
            failures += 1
            if failures > self.cfg.max_retries:
                kind, problem = failure
                hint = ("Is the server, or a proxy in front of it, sending broken replies?"
                        if kind in BAD_REPLY_KINDS else "Is the server up?")
                raise JudgeError(f"{self._where()}: model '{self.model}': no answer after {failures} attempts "
                                 f"(last error: {problem}). {hint}")
            self.stats.retries += 1
            delay = min(self.cfg.max_backoff_s, self.cfg.backoff_s * 2 ** (failures - 1))
            await asyncio.sleep(delay * (0.5 + random.random() / 2))

    # -- reading --------------------------------------------------------------------------
    def _read(self, response: Any, req: JudgeRequest) -> dict[str, Any]:
        usage = getattr(response, "usage", None)
        prompt_tokens = _token_count(getattr(usage, "prompt_tokens", 0))
        completion_tokens = _token_count(getattr(usage, "completion_tokens", 0))
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        self.stats.cost_usd += (prompt_tokens * self.cfg.price_input_per_mtok
                                + completion_tokens * self.cfg.price_output_per_mtok) / 1e6
        choice, text = first_choice(response)
        value: dict[str, Any] = {"raw": text, "usage": {"prompt_tokens": prompt_tokens,
                                                        "completion_tokens": completion_tokens}}
        if self.cfg.batch_questions:
            answers = parse_json_answers(text, req.question_ids)
            value.update(path="json", answers={qid: {"answer": a, "p_yes": None} for qid, a in answers.items()})
        else:
            candidates = logprob_candidates(choice, strict=self.cfg.answer_mode == "logprobs")
            read = p_yes_from_logprobs(candidates) if candidates is not None else None
            if read is not None:
                p_yes, mass = read
                value.update(path="logprobs", yes_no_mass=mass, answers={req.question_ids[0]: {
                    "answer": "yes" if p_yes >= 0.5 else "no", "p_yes": p_yes}})
            else:
                value.update(path="text", answers={req.question_ids[0]: {"answer": parse_yes_no(text),
                                                                          "p_yes": None}})
        self.stats.paths[value["path"]] = self.stats.paths.get(value["path"], 0) + 1
        return value

    def close(self) -> None:
        pass
