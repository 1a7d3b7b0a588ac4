"""The `llm` generator: self-instruct from each API's documentation, as Gorilla made APIBench.

One request per API: its document, and a request for `per_api` different realistic tasks for which
that API is the right call, each with an explanation and code, as a JSON list. Only database
entries are shown: no eval item (nor any other example) is put in a prompt.

Sending goes through the feedback judges' `openai` client (`OpenAIJudge`: async with a
concurrency limit, retries with backoff on 429/5xx/timeouts/unreadable replies, token usage) and
their SQLite cache (`JudgeCache`, keyed by this generator, the model and a hash of the exact
request), so a rerun sends nothing and a killed run asks only for what it lacks. A reply that is
not such a JSON list yields no example and is counted (`unreadable_replies`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif_code.core.config import check, check_at_least
from rlaif_code.feedback.cache import JudgeCache
from rlaif_code.feedback.judges.base import JudgeRequest, request_key
from rlaif_code.feedback.judges.openai_judge import OpenAIJudge, OpenAIJudgeConfig, OpenAIServer, first_choice
from rlaif_code.synth.examples import GeneratorResult, SourceApi, SynthExample

KIND = "synth-openai"
SYSTEM_PROMPT = ("You write training data for a small code model that must learn to call APIs correctly. "
                 "You are given the documentation of one API; stay faithful to it.")
_DOC_FIELDS = ("domain", "framework", "functionality", "api_name", "api_call", "api_arguments",
               "python_environment_requirements", "example_code", "description")


@dataclass
class SynthLLMConfig(OpenAIServer):
    temperature: float = 0.7  # sampling temperature: varied instructions need some
    max_tokens: int = 1024  # per reply (all of one API's examples)
    concurrency: int = 8  # requests in flight at once
    timeout_s: float = 120.0  # seconds per request
    max_retries: int = 4  # retries of a request on 408, 409, 429, 5xx, timeouts and unreadable replies
    backoff_s: float = 1.0  # first wait before a retry, doubled each time (jittered)

    def __post_init__(self) -> None:
        check_at_least(self, 1, "max_tokens", "concurrency")
        check_at_least(self, 0, "temperature", "max_retries", "backoff_s")
        check(self.timeout_s > 0, "timeout_s", f"must be positive, got {self.timeout_s!r}")


class SelfInstructClient(OpenAIJudge):
    """The judge's client, reading a reply as free text instead of yes/no."""

    kind = KIND

    def __init__(self, cfg: SynthLLMConfig) -> None:
        super().__init__(OpenAIJudgeConfig(
            base_url=cfg.base_url, model=cfg.model, api_key=cfg.api_key, api_key_env=cfg.api_key_env,
            answer_mode="text", max_tokens=cfg.max_tokens, temperature=cfg.temperature,
            concurrency=cfg.concurrency, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
            backoff_s=cfg.backoff_s))

    def _read(self, response: Any, req: JudgeRequest) -> dict[str, Any]:
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        _choice, text = first_choice(response)
        self.stats.paths["text"] = self.stats.paths.get("text", 0) + 1
        return {"raw": text, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}


def api_document(entry: dict[str, Any]) -> str:
    return json.dumps({k: entry[k] for k in _DOC_FIELDS if entry.get(k) not in (None, "", [], {})},
                      ensure_ascii=False, indent=1)


def messages_for(entry: dict[str, Any], per_api: int) -> list[dict[str, str]]:
    user = (f"API documentation:\n{api_document(entry)}\n\n"
            f"Write {per_api} different, realistic requests a developer could make for which this API is the "
            "right one to call. Describe the developer's problem in their own words; do not name the API or "
            "its id. For each request write an explanation (numbered steps: imports, loading, calling, using "
            "the result) and complete Python code that uses the api_call above.\n"
            'Reply with only a JSON list: [{"instruction": "...", "explanation": "...", "code": "..."}, ...]')
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def read_examples(raw: str) -> list[dict[str, str]] | None:
    """The reply's [{instruction, explanation, code}, ...], or None where it is not that."""
    start, end = raw.find("["), raw.rfind("]")
    if start == -1 or end <= start:
        return None
    try:
        items = json.loads(raw[start:end + 1])
    except json.JSONDecodeError:
        return None
    keys = ("instruction", "explanation", "code")
    if not isinstance(items, list):
        return None
    good = [item for item in items if isinstance(item, dict) and all(isinstance(item.get(k), str) for k in keys)]
    return good or None


def cache_for(cfg: Any) -> JudgeCache:
    return JudgeCache(cfg.cache_path or Path(cfg.out_dir) / "synth_cache.sqlite")


def llm_examples(apis: list[SourceApi], cfg: Any) -> GeneratorResult:
    from rlaif_code.feedback.judges.base import ask_all

    client = SelfInstructClient(cfg.llm)
    params = {"max_tokens": cfg.llm.max_tokens, "temperature": cfg.llm.temperature, "per_api": cfg.per_api,
              "seed": cfg.seed}
    requests = []
    for api in apis:
        messages = messages_for(api.entry, cfg.per_api)
        # synth.seed in the key: another seed asks again, for other examples
        requests.append(JudgeRequest(request_key(KIND, client.model, messages, params), messages, []))
    with cache_for(cfg) as cache:
        replies = ask_all(client, cache, requests)
        cache_stats = {"cache_hits": cache.hits, "cache_misses": cache.misses}
    examples, unreadable = [], 0
    for api, req in zip(apis, requests):
        items = read_examples(replies[req.key].get("raw") or "")
        if items is None:
            unreadable += 1
            continue
        examples += [SynthExample(item["instruction"], item["explanation"], item["code"], "llm", api)
                     for item in items[:cfg.per_api]]
    return GeneratorResult(examples, {"unreadable_replies": unreadable, **cache_stats, **client.stats.to_dict()})
