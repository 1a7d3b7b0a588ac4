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
  429, 408, 5xx, timeouts and refused connections. Other 4xx fail at once. When a
  request has used up its retries the run stops with a `JudgeError` naming the server
  and the last error; every reply received before that is already cached.
* Token usage is summed from the replies' `usage`; `price_input_per_mtok` and
  `price_output_per_mtok` (USD per million tokens; defaults: gpt-3.5-turbo-0125's
  list prices) give the cost estimate reported in the stage metrics.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass
from typing import Any, Literal

from rlaif_code.feedback.judges import (
    JudgeError,
    JudgeRequest,
    JudgeStats,
    JudgeSubject,
    OnResult,
    per_question_requests,
    batch_messages,
    p_yes_from_logprobs,
    parse_json_answers,
    parse_yes_no,
    request_key,
)
from rlaif_code.feedback.rubric import Question

LOCAL_PLACEHOLDER_KEY = "sk-no-key-needed"


@dataclass
class OpenAIJudgeConfig:
    base_url: str | None = None  # None: $OPENAI_BASE_URL, else api.openai.com
    model: str = "gpt-3.5-turbo"
    api_key: str | None = None  # None: the variable named by api_key_env
    api_key_env: str = "OPENAI_API_KEY"
    answer_mode: Literal["auto", "logprobs", "text"] = "auto"
    top_logprobs: int = 10
    batch_questions: bool = False
    max_tokens: int = 3  # per-question replies: "Yes", "No."
    max_tokens_json: int = 256  # batch_questions replies
    temperature: float = 0.0
    seed: int | None = 0
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    price_input_per_mtok: float = 0.5
    price_output_per_mtok: float = 1.5


def _retryable_status(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


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

    async def _ask(self, client: Any, req: JudgeRequest) -> dict[str, Any]:
        import openai

        where = self.base_url or "api.openai.com"
        failures = 0
        while True:
            kwargs = self._create_kwargs(req)
            self.stats.requests += 1
            try:
                response = await client.chat.completions.create(**kwargs)
                return self._read(response, req)
            except openai.APIStatusError as err:
                if (err.status_code == 400 and "logprobs" in kwargs and self.cfg.answer_mode == "auto"):
                    # The server rejects the logprobs parameters: read text from now on.
                    self._logprobs_refused = True
                    continue
                if not _retryable_status(err.status_code):
                    raise JudgeError(f"{where}: model '{self.model}': HTTP {err.status_code}: "
                                     f"{err.message}") from err
                last_error: Exception = err
            except (openai.APITimeoutError, openai.APIConnectionError) as err:
                last_error = err
            failures += 1
            if failures > self.cfg.max_retries:
                raise JudgeError(f"{where}: model '{self.model}': no answer after {failures} attempts "
                                 f"(last error: {type(last_error).__name__}: {last_error}). Is the server up? "
                                 "Replies received so far are kept in the cache; rerun to continue.")
            self.stats.retries += 1
            delay = min(self.cfg.max_backoff_s, self.cfg.backoff_s * 2 ** (failures - 1))
            await asyncio.sleep(delay * (0.5 + random.random() / 2))

    # -- reading --------------------------------------------------------------------------
    def _read(self, response: Any, req: JudgeRequest) -> dict[str, Any]:
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        self.stats.cost_usd += (prompt_tokens * self.cfg.price_input_per_mtok
                                + completion_tokens * self.cfg.price_output_per_mtok) / 1e6
        if not response.choices:
            raise JudgeError(f"{self.base_url}: a reply with no choices for model '{self.model}'")
        choice = response.choices[0]
        text = choice.message.content or ""
        value: dict[str, Any] = {"raw": text, "usage": {"prompt_tokens": prompt_tokens,
                                                        "completion_tokens": completion_tokens}}
        if self.cfg.batch_questions:
            answers = parse_json_answers(text, req.question_ids)
            value.update(path="json", answers={qid: {"answer": a, "p_yes": None} for qid, a in answers.items()})
        else:
            read = self._from_logprobs(choice)
            if read is not None:
                p_yes, mass = read
                value.update(path="logprobs", yes_no_mass=mass, answers={req.question_ids[0]: {
                    "answer": "yes" if p_yes >= 0.5 else "no", "p_yes": p_yes}})
            else:
                value.update(path="text", answers={req.question_ids[0]: {"answer": parse_yes_no(text),
                                                                          "p_yes": None}})
        self.stats.paths[value["path"]] = self.stats.paths.get(value["path"], 0) + 1
        return value

    @staticmethod
    def _from_logprobs(choice: Any) -> tuple[float, float] | None:
        logprobs = getattr(choice, "logprobs", None)
        content = getattr(logprobs, "content", None) if logprobs is not None else None
        if not content:
            return None
        first = content[0]
        candidates = [(t.token, t.logprob) for t in (first.top_logprobs or [])]
        if not candidates:
            candidates = [(first.token, first.logprob)]
        return p_yes_from_logprobs(candidates)

    def close(self) -> None:
        pass
