"""Judges: reading yes/no, the openai judge against a scripted local server, the hf judge on a tiny LM."""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any

import pytest

from judge_server import ScriptedServer, chat_reply, error_reply, last_user_message
from rlaif_code.core.registry import RegistryError
from rlaif_code.feedback.cache import JudgeCache
from rlaif_code.feedback.judges import (
    JUDGES,
    JudgeError,
    JudgeSubject,
    ask_all,
    make_judge,
    p_yes_from_logprobs,
    parse_json_answers,
    parse_yes_no,
)
from rlaif_code.feedback.judges.hf_judge import HFJudge, HFJudgeConfig
from rlaif_code.feedback.judges.openai_judge import OpenAIJudge, OpenAIJudgeConfig
from rlaif_code.feedback.rubric import Question

QUESTIONS = [Question("complete", "Is the code complete?", 1.0, "llm"),
             Question("logic", "Is the code logically correct?", 1.0, "llm")]
SUBJECT = JudgeSubject(instruction="Load a ResNet-18 for image classification.",
                       answer_text="<<<api_call>>>: torch.hub.load('pytorch/vision', 'resnet18')",
                       reference_api={"api_call": "torch.hub.load(repo_or_dir='pytorch/vision', model='resnet18')"})


@pytest.mark.parametrize("text, expected", [
    ("Yes", "yes"), (" no.", "no"), ("**Yes**, it is", "yes"), ("Answer: No", "no"), ('"yes"', "yes"),
    ("The code is fine, so yes.", "yes"), ("Maybe", "unparseable"), ("", "unparseable"),
    ("Yes and no", "yes"), ("I cannot say yes or no", "unparseable"), ("Nope", "unparseable"),
])
def test_parse_yes_no(text: str, expected: str) -> None:
    assert parse_yes_no(text) == expected


def test_p_yes_pools_spellings_and_renormalises() -> None:
    p, mass = p_yes_from_logprobs([("Yes", math.log(0.5)), (" yes", math.log(0.1)), ("No", math.log(0.2)),
                                   ("The", math.log(0.1))])
    assert p == pytest.approx(0.6 / 0.8) and mass == pytest.approx(0.8)
    assert p_yes_from_logprobs([("The", -0.1)]) is None


def test_parse_json_answers() -> None:
    ids = ["complete", "logic", "missing"]
    assert parse_json_answers('Sure: {"complete": "yes", "logic": false}', ids) == {
        "complete": "yes", "logic": "no", "missing": "unparseable"}
    assert parse_json_answers("complete: yes, 'logic': no", ids)["logic"] == "no"
    assert parse_json_answers("nothing here", ids) == dict.fromkeys(ids, "unparseable")


def test_unknown_judge_is_a_loud_error() -> None:
    assert {"openai", "hf", "tools"} <= set(JUDGES.names())
    with pytest.raises(RegistryError, match="unknown judge 'gpt5'.*known: hf, openai, tools"):
        make_judge("gpt5", None)


def judge_for(server: ScriptedServer, **kwargs: Any) -> OpenAIJudge:
    cfg = OpenAIJudgeConfig(base_url=server.url, model="scripted", backoff_s=0.001, max_backoff_s=0.01,
                            timeout_s=30.0, **kwargs)  # generous: a loaded CI machine must not time out
    return OpenAIJudge(cfg)


def test_logprobs_path_gives_p_yes_and_cost(tmp_path: Path) -> None:
    with ScriptedServer(lambda body, n: chat_reply("Yes", [("Yes", math.log(0.7)), ("No", math.log(0.1))],
                                                   prompt_tokens=1000, completion_tokens=1)) as server:
        judge = judge_for(server, price_input_per_mtok=2.0, price_output_per_mtok=10.0)
        requests = judge.requests_for(SUBJECT, QUESTIONS)
        with JudgeCache(tmp_path / "c.sqlite") as cache:
            replies = ask_all(judge, cache, requests)
    assert len(server.bodies) == 2 and server.bodies[0]["logprobs"] is True
    assert server.bodies[0]["top_logprobs"] == 10
    reply = replies[requests[0].key]
    assert reply["path"] == "logprobs"
    assert reply["answers"]["complete"] == {"answer": "yes", "p_yes": pytest.approx(0.875)}
    stats = judge.stats.to_dict()
    assert stats["requests"] == 2 and stats["http_requests"] == 2
    assert stats["prompt_tokens"] == 2000 and stats["cost_usd"] == pytest.approx((2000 * 2 + 2 * 10) / 1e6)


def test_text_path_and_unparseable(tmp_path: Path) -> None:
    def script(body: dict[str, Any], n: int):
        return chat_reply("No." if "complete" in last_user_message(body) else "Perhaps")

    with ScriptedServer(script) as server:
        judge = judge_for(server, answer_mode="text")
        requests = judge.requests_for(SUBJECT, QUESTIONS)
        replies = ask_all(judge, None, requests)
    assert "logprobs" not in server.bodies[0]
    assert replies[requests[0].key]["answers"]["complete"]["answer"] == "no"
    assert replies[requests[1].key]["answers"]["logic"]["answer"] == "unparseable"
    assert judge.stats.paths == {"text": 2}


def test_auto_mode_reads_text_when_the_server_sends_no_logprobs() -> None:
    with ScriptedServer(lambda body, n: chat_reply("yes")) as server:
        judge = judge_for(server)
        replies = ask_all(judge, None, judge.requests_for(SUBJECT, QUESTIONS[:1]))
    assert [r["path"] for r in replies.values()] == ["text"]


def test_auto_mode_falls_back_when_the_server_rejects_logprobs() -> None:
    def script(body: dict[str, Any], n: int):
        return error_reply(400, "logprobs not supported") if body.get("logprobs") else chat_reply("No")

    with ScriptedServer(script) as server:
        judge = judge_for(server, concurrency=1)
        replies = ask_all(judge, None, judge.requests_for(SUBJECT, QUESTIONS))
    assert [r["answers"] for r in replies.values()] == [{"complete": {"answer": "no", "p_yes": None}},
                                                        {"logic": {"answer": "no", "p_yes": None}}]
    assert len(server.bodies) == 3  # one refused, then no more logprobs asked


def test_retries_on_429_and_5xx_then_succeeds() -> None:
    def script(body: dict[str, Any], n: int):
        return [error_reply(429), error_reply(503)][n] if n < 2 else chat_reply("Yes")

    with ScriptedServer(script) as server:
        judge = judge_for(server, concurrency=1)
        replies = ask_all(judge, None, judge.requests_for(SUBJECT, QUESTIONS[:1]))
    assert list(replies.values())[0]["answers"]["complete"]["answer"] == "yes"
    assert judge.stats.retries == 2 and judge.stats.requests == 3


def test_client_errors_fail_at_once_with_the_server_named() -> None:
    with ScriptedServer(lambda body, n: error_reply(401, "bad key")) as server:
        judge = judge_for(server, answer_mode="text")
        with pytest.raises(JudgeError, match=r"127\.0\.0\.1.*HTTP 401: .*bad key"):
            ask_all(judge, None, judge.requests_for(SUBJECT, QUESTIONS[:1]))
    assert len(server.bodies) == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_server_down_retries_then_clear_error() -> None:
    cfg = OpenAIJudgeConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=2, backoff_s=0.001)
    judge = OpenAIJudge(cfg)
    with pytest.raises(JudgeError, match="no answer after 3 attempts.*Is the server up"):
        ask_all(judge, None, judge.requests_for(SUBJECT, QUESTIONS[:1]))
    assert judge.stats.retries == 2


def test_what_was_answered_is_kept_when_the_server_fails(tmp_path: Path) -> None:
    def script(body: dict[str, Any], n: int):
        return chat_reply("Yes") if "complete" in last_user_message(body) else error_reply(500)

    with ScriptedServer(script) as server:
        judge = judge_for(server, max_retries=1, concurrency=1)
        requests = judge.requests_for(SUBJECT, QUESTIONS)
        with JudgeCache(tmp_path / "c.sqlite") as cache:
            with pytest.raises(JudgeError):
                ask_all(judge, cache, requests)
            assert cache.get("openai", "scripted", requests[0].key)["answers"]["complete"]["answer"] == "yes"
            assert cache.get("openai", "scripted", requests[1].key) is None


def test_batch_questions_as_json_in_one_request() -> None:
    with ScriptedServer(lambda body, n: chat_reply('{"complete": "yes", "logic": "no"}')) as server:
        judge = judge_for(server, batch_questions=True)
        requests = judge.requests_for(SUBJECT, QUESTIONS)
        replies = ask_all(judge, None, requests)
    assert len(requests) == 1 and len(server.bodies) == 1
    assert "logprobs" not in server.bodies[0] and server.bodies[0]["max_tokens"] == 256
    assert replies[requests[0].key]["answers"] == {"complete": {"answer": "yes", "p_yes": None},
                                                   "logic": {"answer": "no", "p_yes": None}}


def test_concurrency_is_bounded(tmp_path: Path) -> None:
    import threading
    import time

    active, peak, lock = [0], [0], threading.Lock()

    def script(body: dict[str, Any], n: int):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return chat_reply("Yes")

    many = [Question(f"q{i}", f"Question {i}?", 1.0, "llm") for i in range(12)]
    with ScriptedServer(script) as server:
        judge = judge_for(server, concurrency=3)
        ask_all(judge, None, judge.requests_for(SUBJECT, many))
    assert len(server.bodies) == 12 and 1 < peak[0] <= 3


def test_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(JudgeError, match=r"\$OPENAI_API_KEY"):
        OpenAIJudge(OpenAIJudgeConfig())
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert OpenAIJudge(OpenAIJudgeConfig()).base_url == "http://127.0.0.1:9/v1"


def test_request_keys_depend_on_prompt_and_reading_mode() -> None:
    cfg = OpenAIJudgeConfig(base_url="http://127.0.0.1:9/v1")
    keys_auto = [r.key for r in OpenAIJudge(cfg).requests_for(SUBJECT, QUESTIONS)]
    cfg_text = OpenAIJudgeConfig(base_url="http://127.0.0.1:9/v1", answer_mode="text")
    keys_text = [r.key for r in OpenAIJudge(cfg_text).requests_for(SUBJECT, QUESTIONS)]
    assert len(set(keys_auto)) == 2 and not set(keys_auto) & set(keys_text)
    assert keys_auto == [r.key for r in OpenAIJudge(cfg).requests_for(SUBJECT, QUESTIONS)]


def test_hf_judge_batched_equals_one_by_one(tmp_path: Path) -> None:
    from tiny import save_tiny_causal_lm

    path = save_tiny_causal_lm(tmp_path / "lm")
    many = QUESTIONS + [Question("q3", "Does the explanation describe the code, in a much longer question "
                                       "so that the prompts have different lengths?", 1.0, "llm")]
    results = {}
    for batch_size in (1, 3):
        judge = HFJudge(HFJudgeConfig(model_path=str(path), batch_size=batch_size, use_chat_template=False))
        got: dict[str, Any] = {}
        judge.answer(judge.requests_for(SUBJECT, many), lambda req, value, got=got: got.__setitem__(req.key, value))
        results[batch_size] = got
    assert results[1].keys() == results[3].keys() and len(results[1]) == 3
    for key, value in results[1].items():
        (qid, answer), = value["answers"].items()
        assert 0.0 <= answer["p_yes"] <= 1.0 and answer["answer"] == ("yes" if answer["p_yes"] >= 0.5 else "no")
        assert results[3][key]["answers"][qid]["p_yes"] == pytest.approx(answer["p_yes"], abs=1e-4)


def test_hf_judge_needs_a_model_path() -> None:
    with pytest.raises(JudgeError, match="hf.model_path"):
        HFJudge(HFJudgeConfig())
