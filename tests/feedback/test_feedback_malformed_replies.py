"""Replies that arrive but cannot be read (a 200 cut mid-JSON, no choices, missing fields) are transient.

All against the scripted HTTP server (tests/judge_server.py) through the real `openai` client:
each kind is retried and counted, retries running out stop `rlaif feedback` with one line and
exit code 2 keeping what was received, a rerun asks only the rest, and a server garbling one
reply in ten still gets every answer labelled.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from judge_server import ScriptedServer, chat_reply, cut_off_reply, raw_reply, truncated_reply
from rlaif_code.cli import main
from rlaif_code.core.artifacts import read_jsonl, read_stage_record
from rlaif_code.feedback import FeedbackConfig, run
from rlaif_code.feedback.cache import JudgeCache
from rlaif_code.feedback.judges import JudgeError, JudgeSubject, ask_all
from rlaif_code.feedback.judges.openai_judge import OpenAIJudge, OpenAIJudgeConfig, server_failure
from rlaif_code.feedback.rubric import Question
from tiny import make_data_dir, write_samples

GOOD = chat_reply("Yes", [("Yes", -0.1), ("No", -2.5)])
QUESTIONS = [Question("complete", "Is the code complete?", 1.0, "llm")]
SUBJECT = JudgeSubject(instruction="Load a ResNet-18.", answer_text="torch.hub.load('pytorch/vision', 'resnet18')")
LLM_QUESTIONS = ("complete", "api_arguments_correct", "explanation_matches_code", "logically_correct")
FAST = {"backoff_s": 0.001, "max_backoff_s": 0.005, "timeout_s": 5.0}


def body_with(**choice: Any) -> str:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "scripted",
                       "choices": [{"index": 0, "finish_reason": "stop", **choice}]})


# (name, the unreadable reply, the kind it is counted as, answer_mode)
BAD_REPLIES = [
    ("200 cut mid-JSON", truncated_reply(GOOD), "malformed_json", "auto"),
    ("200 cut one byte short", truncated_reply(GOOD, keep=0.99), "malformed_json", "auto"),
    ("empty 200", raw_reply(""), "malformed_json", "auto"),
    ("HTML from a proxy", raw_reply("<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
     "malformed_json", "auto"),
    ("not UTF-8", raw_reply(b'{"choices": "\xff\xfe"}'), "malformed_json", "auto"),
    ("JSON null", raw_reply("null"), "malformed_json", "auto"),
    ("JSON list", raw_reply("[1, 2]"), "malformed_json", "auto"),
    ("{}", raw_reply("{}"), "no_choices", "auto"),
    ("choices null", raw_reply('{"choices": null}'), "no_choices", "auto"),
    ("choices empty", raw_reply('{"choices": []}'), "no_choices", "auto"),
    ("choice without message", raw_reply(body_with()), "missing_fields", "auto"),
    ("message null", raw_reply(body_with(message=None)), "missing_fields", "auto"),
    ("message without content", raw_reply(body_with(message={"role": "assistant"})), "missing_fields", "text"),
    ("content not text", raw_reply(body_with(message={"content": 5})), "missing_fields", "text"),
    ("choice not an object", raw_reply('{"choices": [1]}'), "missing_fields", "text"),
    ("token logprob without logprob", raw_reply(body_with(message={"content": "Yes"},
                                                          logprobs={"content": [{"token": "Yes"}]})),
     "missing_fields", "auto"),
    ("top_logprobs garbled", raw_reply(body_with(message={"content": "Yes"}, logprobs={"content": [
        {"token": "Yes", "logprob": -0.1, "top_logprobs": [{"token": 1, "logprob": "a"}]}]})),
     "missing_fields", "logprobs"),
    ("logprobs without content", raw_reply(body_with(message={"content": "Yes"}, logprobs={"tokens": ["Yes"]})),
     "missing_fields", "logprobs"),
    ("logprobs a string", raw_reply(body_with(message={"content": "Yes"}, logprobs="Yes")),
     "missing_fields", "logprobs"),
    # Not new, shown to hold: a body cut off before its Content-Length is a dropped connection.
    ("connection dropped mid-body", cut_off_reply(GOOD), "connection", "auto"),
]


@pytest.mark.parametrize("name, bad, kind, mode", BAD_REPLIES, ids=[case[0] for case in BAD_REPLIES])
def test_an_unreadable_reply_is_retried_counted_and_the_answer_labelled(name: str, bad: Any, kind: str,
                                                                        mode: str) -> None:
    with ScriptedServer(lambda body, n: bad if n < 2 else GOOD) as server:
        judge = OpenAIJudge(OpenAIJudgeConfig(base_url=server.url, model="scripted", max_retries=2,
                                              answer_mode=mode, **FAST))  # type: ignore[arg-type]
        replies = ask_all(judge, None, judge.requests_for(SUBJECT, QUESTIONS))
    assert len(server.bodies) == 3
    (reply,) = replies.values()
    assert reply["answers"]["complete"]["answer"] == "yes"
    stats = judge.stats.to_dict()
    assert stats["errors"] == {kind: 2} and stats["retries"] == 2 and stats["requests"] == 3


def test_well_formed_replies_read_as_before() -> None:
    """Null content (a refusal) is an empty reply; logprobs null or an empty list read the text."""
    script = [raw_reply(body_with(message={"role": "assistant", "content": None, "refusal": "no"})),
              raw_reply(body_with(message={"content": "No"}, logprobs=None)),
              raw_reply(body_with(message={"content": "No"}, logprobs={"content": []})), GOOD]
    for mode, expected in (("auto", ["unparseable", "no", "no", "yes"]), ("logprobs", ["unparseable", "no", "no"])):
        with ScriptedServer(lambda body, n: script[n]) as server:
            for n, answer in enumerate(expected):
                judge = OpenAIJudge(OpenAIJudgeConfig(base_url=server.url, model="scripted", max_retries=0,
                                                      answer_mode=mode, **FAST))  # type: ignore[arg-type]
                (value,) = ask_all(judge, None, judge.requests_for(SUBJECT, QUESTIONS)).values()
                assert value["answers"]["complete"]["answer"] == answer, (mode, n)
                assert judge.stats.errors == {}


@pytest.mark.parametrize("bad, kind", [(raw_reply("{}"), "no_choices"),
                                       (raw_reply(body_with()), "missing_fields"),
                                       (raw_reply("<html>oops</html>", content_type="text/html"), "malformed_json")])
def test_strict_client_validation_errors_are_sorted_too(bad: Any, kind: str) -> None:
    """With strict response validation the client raises APIResponseValidationError instead."""
    import openai

    with ScriptedServer(lambda body, n: bad) as server:
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, _strict_response_validation=True)
        with pytest.raises(openai.APIResponseValidationError) as err:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        client.close()
    assert server_failure(err.value)[0] == kind
    assert server_failure(ValueError("ours, not the server's")) is None


def test_retries_running_out_name_server_kind_and_attempts() -> None:
    with ScriptedServer(lambda body, n: truncated_reply(GOOD)) as server:
        judge = OpenAIJudge(OpenAIJudgeConfig(base_url=server.url, model="scripted", max_retries=2, **FAST))
        with pytest.raises(JudgeError) as err:
            ask_all(judge, None, judge.requests_for(SUBJECT, QUESTIONS))
    message = str(err.value)
    assert message.startswith(f"{server.url}: model 'scripted': no answer after 3 attempts")
    assert "unreadable reply: malformed_json: the body is not valid JSON" in message and "\n" not in message
    assert judge.stats.errors == {"malformed_json": 3} and len(err.value.pending_keys) == 1


# -- the stage -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, gorilla_data: Path) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("data"), gorilla_data)


@pytest.fixture
def samples(tmp_path: Path, data_dir: Path) -> Path:
    path = tmp_path / "samples.jsonl"
    write_samples(data_dir, path)
    return path


def cli_args(samples: Path, data_dir: Path, out: Path, url: str, *extra: str) -> list[str]:
    return ["feedback", "--samples", str(samples), "--data_dir", str(data_dir), "--out_dir", str(out),
            "--judge", "openai", "--openai.base_url", url, "--openai.model", "scripted",
            "--openai.backoff_s", "0.001", "--openai.max_backoff_s", "0.005", *extra]


def test_retries_running_out_stop_with_one_line_and_a_rerun_asks_only_the_rest(
        tmp_path: Path, data_dir: Path, samples: Path, capsys: pytest.CaptureFixture) -> None:
    received = 5  # then the server sends only truncated bodies

    def breaking(body: dict[str, Any], n: int):
        return GOOD if n < received else truncated_reply(GOOD)

    out = tmp_path / "feedback"
    with ScriptedServer(breaking) as server:
        args = cli_args(samples, data_dir, out, server.url, "--max_samples", "3", "--openai.max_retries", "2",
                        "--openai.concurrency", "1")
        assert main(args) == 2
        assert len(server.bodies) == received + 3
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and captured.err.rstrip("\n").endswith(errors[0])
    assert errors[0].startswith(f"error: {server.url}: model 'scripted': no answer after 3 attempts")
    assert "malformed_json" in errors[0]
    # Three answers of four llm questions; the first answer's four and one of the second's came back.
    assert "2 of 3 answers are still to be labelled (7 judge requests unanswered)" in errors[0]
    assert "kept in the cache" in errors[0]
    assert not (out / "feedback.jsonl").exists()
    with JudgeCache(out / "judge_cache.sqlite") as cache:
        assert cache.count("openai") == received

    with ScriptedServer(lambda body, n: GOOD) as healthy:
        assert main(cli_args(samples, data_dir, out, healthy.url, "--max_samples", "3")) == 0
        assert len(healthy.bodies) == 3 * len(LLM_QUESTIONS) - received
    metrics = read_stage_record(out)["metrics"]
    assert metrics["cache_hits"] == received and metrics["judge_stats"]["errors"] == {}
    rows = read_jsonl(out / "feedback.jsonl")
    assert len(rows) == 3 and all(row["label"] in ("accepted", "rejected") for row in rows)


def test_acceptance_one_malformed_reply_in_ten_still_labels_every_answer(tmp_path: Path, data_dir: Path,
                                                                          samples: Path) -> None:
    garbled = [truncated_reply(GOOD), raw_reply("{}"), raw_reply(body_with()), raw_reply(""),
               raw_reply(body_with(message={"content": "Yes"}, logprobs={"content": [{"token": "Yes"}]}))]

    seen: dict[str, int] = {}
    lock = threading.Lock()

    def flaky(body: dict[str, Any], n: int):
        """The first sending of every 10th request (by first arrival), through every kind in turn.

        Chosen by request, not by arrival number, so that no retry can land on a garbled slot again."""
        key = json.dumps(body["messages"])
        with lock:
            first = key not in seen
            index = seen.setdefault(key, len(seen))
        return garbled[(index // 10) % len(garbled)] if first and index % 10 == 9 else GOOD

    with ScriptedServer(flaky) as server:
        cfg = FeedbackConfig(samples=str(samples), data_dir=str(data_dir), out_dir=str(tmp_path / "feedback"),
                             judge="openai", openai=OpenAIJudgeConfig(base_url=server.url, model="scripted",
                                                                      max_retries=1, **FAST))
        metrics = run(cfg)
        sent = len(server.bodies)
    n_answers = metrics["n_answers"]
    n_requests = n_answers * len(LLM_QUESTIONS)
    n_bad = n_requests // 10
    assert n_answers == 18 and n_bad == 7 and sent == n_requests + n_bad
    rows = read_jsonl(Path(cfg.out_dir) / "feedback.jsonl")
    assert len(rows) == n_answers
    for row in rows:
        assert row["label"] in ("accepted", "rejected")
        for qid in LLM_QUESTIONS:
            assert row["answers"][qid]["by"] == "openai:scripted" and row["answers"][qid]["answer"] == "yes"
    stats = read_stage_record(Path(cfg.out_dir))["metrics"]["judge_stats"]
    assert sum(stats["errors"].values()) == n_bad == stats["retries"]
    assert set(stats["errors"]) == {"malformed_json", "no_choices", "missing_fields"}
    assert stats["reply_paths"] == {"logprobs": n_answers * len(LLM_QUESTIONS)}


def test_judge_check_reports_the_error_counts(tmp_path: Path, data_dir: Path, samples: Path) -> None:
    from rlaif_code.feedback.judge_check import JudgeCheckConfig
    from rlaif_code.feedback.judge_check import run as run_check

    with ScriptedServer(lambda body, n: raw_reply("{}") if n == 0 else chat_reply("Yes")) as server:
        cfg = JudgeCheckConfig(samples=str(samples), data_dir=str(data_dir), n=1, out_dir=str(tmp_path / "check"),
                               openai=OpenAIJudgeConfig(base_url=server.url, model="scripted", answer_mode="text",
                                                        max_retries=1, concurrency=1, **FAST))
        metrics = run_check(cfg)
    assert metrics["judge_stats"]["errors"] == {"no_choices": 1}
    assert read_stage_record(Path(cfg.out_dir))["metrics"]["judge_stats"]["errors"] == {"no_choices": 1}


def test_cli_prints_one_line_for_a_judge_error_from_any_stage(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    """A JudgeError escaping a stage without its own handler (e.g. `rlaif run`) is one line, exit 2."""
    from rlaif_code.feedback import judge_check

    def failing(cfg: Any, args: Any) -> int:
        raise JudgeError("http://judge/v1: model 'm': no answer\n<html>\n  502\n</html>")

    monkeypatch.setattr(judge_check, "run_from_cli", failing)
    assert main(["judge-check"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: http://judge/v1: model 'm': no answer <html> 502 </html>\n"
    assert "Traceback" not in captured.out
