"""The feedback stage end to end: tools, hybrid with a scripted server, resuming, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from judge_server import ScriptedServer, chat_reply, error_reply, last_user_message
from rlaif_code.cli import main
from rlaif_code.core.artifacts import InputError, read_jsonl, read_stage_record
from rlaif_code.feedback import FeedbackConfig, run
from rlaif_code.feedback.cache import JudgeCache
from rlaif_code.feedback.checking import ToolsConfig
from rlaif_code.feedback.judges import JudgeError
from rlaif_code.feedback.judges.openai_judge import OpenAIJudgeConfig
from rlaif_code.feedback.rubric import default_rubric_path, load_rubric
from tiny import make_data_dir, write_samples


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, gorilla_data: Path) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("data"), gorilla_data)


def cfg_for(tmp_path: Path, data_dir: Path, **kwargs: Any) -> FeedbackConfig:
    samples = tmp_path / "samples.jsonl"
    if not samples.exists():
        write_samples(data_dir, samples)
    return FeedbackConfig(samples=str(samples), data_dir=str(data_dir), out_dir=str(tmp_path / "feedback"), **kwargs)


def test_cli_tools_only_writes_labels_and_skips_a_finished_rerun(tmp_path: Path, data_dir: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    samples = tmp_path / "samples.jsonl"
    written = write_samples(data_dir, samples)
    out = tmp_path / "fb"
    args = ["feedback", "--samples", str(samples), "--data_dir", str(data_dir), "--out_dir", str(out)]
    assert main(args) == 0
    rows = read_jsonl(out / "feedback.jsonl")
    assert len(rows) == len(written)
    for row in rows:
        assert {"example_id", "sample_id", "prompt", "text", "label", "score", "answers"} <= set(row)
        # llm questions skipped under the tools judge
        assert set(row["answers"]) == {q.id for q in load_rubric().tool_questions}
        assert all(a["by"].startswith("tool:") for a in row["answers"].values())
    by_variant = {r["sample_id"]: [] for r in rows}
    for r in rows:
        by_variant[r["sample_id"]].append(r)
    assert all(r["label"] == "accepted" for r in by_variant[0])
    assert all(r["label"] == "rejected" and r["answers"]["correct_imports"]["answer"] == "no"
               for r in by_variant[1])
    assert all(r["label"] == "rejected" and r["answers"]["api_exists"]["answer"] == "no"
               and r["answers"]["calls_needed_api"]["answer"] == "no" for r in by_variant[2])
    # the sandbox ran each distinct snippet: the misspelt import and the invented function fail
    assert all(r["answers"]["code_executes"]["answer"] == "no" for r in by_variant[1] + by_variant[2])
    assert "torchh" in by_variant[1][0]["answers"]["code_executes"]["detail"]
    record = read_stage_record(out)
    metrics = record["metrics"]
    assert record["stage"] == "feedback" and metrics["accepted"] == len(by_variant[0])
    assert metrics["contrast_rate"] == 1.0 and metrics["prompts_with_several_answers"] == len(by_variant[0])
    assert metrics["exec_snippets"] == metrics["exec_snippets_run"] == len({r["text"] for r in rows})
    assert record["metrics"]["skipped_llm_questions"] == ["complete", "api_arguments_correct",
                                                          "explanation_matches_code", "logically_correct"]
    capsys.readouterr()
    assert main(args) == 0
    assert '"skipped": true' in capsys.readouterr().out


def yes_unless_logic(body: dict[str, Any], n: int):
    """Yes to every question but "logically correct", which gets an unusable reply."""
    if "logically correct" in last_user_message(body):
        return chat_reply("I am not sure")
    return chat_reply("Yes", [("Yes", -0.1), ("No", -2.5)])


def test_hybrid_llm_answers_cache_and_zero_request_rerun(tmp_path: Path, data_dir: Path) -> None:
    with ScriptedServer(yes_unless_logic) as server:
        openai_cfg = OpenAIJudgeConfig(base_url=server.url, model="scripted", backoff_s=0.001)
        cfg = cfg_for(tmp_path, data_dir, judge="openai", openai=openai_cfg, max_samples=6)
        metrics = run(cfg)
        n_samples = metrics["n_answers"]
        assert len(server.bodies) == 4 * n_samples  # four llm questions per answer
        rows = read_jsonl(Path(cfg.out_dir) / "feedback.jsonl")
        row = rows[0]
        assert row["answers"]["complete"]["by"] == "openai:scripted"
        assert row["answers"]["complete"]["p_yes"] == pytest.approx(math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.5)))
        assert row["answers"]["logically_correct"]["answer"] == "unparseable"
        assert row["n_unparseable"] == 1
        assert metrics["unparseable"] == n_samples
        assert metrics["unparseable_by_question"]["logically_correct"] == n_samples
        with JudgeCache(Path(cfg.out_dir) / "judge_cache.sqlite") as cache:
            assert cache.count("openai") == len(server.bodies)
        # Rerun of the finished stage: skipped, no request.
        assert run(cfg)["skipped"] is True
        # A new threshold is a new config: everything is recomputed, every reply comes from the cache.
        again = run(cfg_for(tmp_path, data_dir, judge="openai", openai=openai_cfg, max_samples=6,
                            threshold_mode="quantile", threshold=0.5))
        assert len(server.bodies) == 4 * n_samples
        assert again["judge_stats"]["requests"] == 0 and again["cache_hits"] == 4 * n_samples
        assert again["threshold_mode"] == "quantile"


def test_killed_midway_resumes_without_duplicates(tmp_path: Path, data_dir: Path) -> None:
    budget = 10  # the server dies after ten answers

    def dying(body: dict[str, Any], n: int):
        return chat_reply("yes") if n < budget else error_reply(503, "overloaded")

    with ScriptedServer(dying) as server:
        cfg = cfg_for(tmp_path, data_dir, judge="openai", max_samples=5,
                      openai=OpenAIJudgeConfig(base_url=server.url, model="scripted", max_retries=1,
                                               backoff_s=0.001, concurrency=1, answer_mode="text"))
        with pytest.raises(JudgeError, match="rerun to continue"):
            run(cfg)
        assert not (Path(cfg.out_dir) / "feedback.jsonl").exists()
    with JudgeCache(Path(cfg.out_dir) / "judge_cache.sqlite") as cache:
        assert cache.count("openai") == budget
    with ScriptedServer(lambda body, n: chat_reply("yes")) as healthy:
        cfg.openai.base_url = healthy.url  # the server address is no part of the cache key
        metrics = run(cfg)
        total = 4 * metrics["n_answers"]
        assert len(healthy.bodies) == total - budget
    with JudgeCache(Path(cfg.out_dir) / "judge_cache.sqlite") as cache:
        assert cache.count("openai") == total


def test_cli_reports_a_dead_server_cleanly(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = cfg_for(tmp_path, data_dir)
    code = main(["feedback", "--samples", cfg.samples, "--data_dir", cfg.data_dir, "--out_dir", cfg.out_dir,
                 "--judge", "openai", "--openai.base_url", "http://127.0.0.1:9/v1", "--openai.max_retries", "0"])
    assert code == 2
    assert "error: http://127.0.0.1:9/v1" in capsys.readouterr().err


def test_unknown_judge_and_rubric_errors(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = cfg_for(tmp_path, data_dir)
    assert main(["feedback", "--samples", cfg.samples, "--data_dir", cfg.data_dir, "--judge", "gpt9"]) == 2
    assert "unknown judge 'gpt9'" in capsys.readouterr().err
    rubric = tmp_path / "r.yaml"
    rubric.write_text("questions:\n  - {id: q1, text: 'x?', weight: 1, by: lint}\n")
    assert main(["feedback", "--samples", cfg.samples, "--data_dir", cfg.data_dir, "--rubric", str(rubric)]) == 2
    assert f"{rubric}: question 'q1': field 'by' = 'lint'" in capsys.readouterr().err


@pytest.mark.parametrize("line, message", [
    ("{not json", ":2: not valid JSON"),
    ('{"example_id": "torchhub_train:1", "sample_id": 0}', ":2: missing field 'text'"),
    ('{"example_id": "nowhere:1", "sample_id": 0, "text": "x"}', ":2: example_id 'nowhere:1' is not in"),
    ('{"example_id": "E", "sample_id": 0, "text": "x", "parsed": [1]}', ":2: field 'parsed'"),
])
def test_malformed_samples_name_file_and_line(tmp_path: Path, data_dir: Path, line: str, message: str) -> None:
    first = read_jsonl(data_dir / "train.jsonl")[0]
    samples = tmp_path / "samples.jsonl"
    good = {"example_id": first["example_id"], "sample_id": 0, "text": first["target"]}
    samples.write_text(json.dumps(good) + "\n" + line.replace('"E"', json.dumps(first["example_id"])) + "\n")
    with pytest.raises(InputError) as err:
        run(FeedbackConfig(samples=str(samples), data_dir=str(data_dir), out_dir=str(tmp_path / "o")))
    assert str(samples) + message in str(err.value)


def test_duplicate_samples_are_refused(tmp_path: Path, data_dir: Path) -> None:
    first = read_jsonl(data_dir / "train.jsonl")[0]
    samples = tmp_path / "samples.jsonl"
    row = json.dumps({"example_id": first["example_id"], "sample_id": 0, "text": first["target"]})
    samples.write_text(row + "\n" + row + "\n")
    with pytest.raises(InputError, match=":2: .* already on line 1"):
        run(FeedbackConfig(samples=str(samples), data_dir=str(data_dir), out_dir=str(tmp_path / "o")))


def test_api_key_in_config_is_not_written_out(tmp_path: Path, data_dir: Path) -> None:
    with ScriptedServer(lambda body, n: chat_reply("yes")) as server:
        cfg = cfg_for(tmp_path, data_dir, judge="openai", max_samples=1,
                      openai=OpenAIJudgeConfig(base_url=server.url, api_key="sk-secret", answer_mode="text"))
        run(cfg)
    stage_text = (Path(cfg.out_dir) / "stage.json").read_text()
    assert "sk-secret" not in stage_text and '"api_key": "***"' in stage_text
    assert run(cfg)["skipped"] is True


def test_an_edited_rubric_file_relabels(tmp_path: Path, data_dir: Path) -> None:
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text(default_rubric_path().read_text())
    cfg = cfg_for(tmp_path, data_dir, rubric=str(rubric))
    first = run(cfg)
    assert run(cfg)["skipped"] is True
    # Same path, new content: one question only, the exact reference match at weight 1.
    rubric.write_text("questions:\n  - {id: calls_needed_api, text: 'right API?', weight: 1, "
                      "by: api_matches_reference}\n")
    second = run(cfg)
    assert "skipped" not in second and second["rubric_sha256"] != first["rubric_sha256"]
    rows = read_jsonl(Path(cfg.out_dir) / "feedback.jsonl")
    assert all(set(r["answers"]) == {"calls_needed_api"} for r in rows)


def test_executes_without_an_exec_env_names_the_question_and_the_fix(tmp_path: Path, data_dir: Path) -> None:
    cfg = cfg_for(tmp_path, data_dir, tools=ToolsConfig(exec_env=str(tmp_path / "no-env")))
    with pytest.raises(InputError, match="'code_executes' uses the executes check.*rlaif exec-env"):
        run(cfg)


def test_sandbox_verdicts_are_kept_and_a_hanging_snippet_is_contained(tmp_path: Path, data_dir: Path) -> None:
    """Each distinct snippet runs once in the real sandbox; a relabelled rerun runs none. A snippet
    that never ends is stopped at exec_timeout and answers no, as in evaluation."""
    first = read_jsonl(data_dir / "train.jsonl")[0]
    hang = first["target"].split("<<<code>>>:")[0] + "<<<code>>>: while True:\n    pass"
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"example_id": first["example_id"], "sample_id": i, "text": text}) + "\n"
                               for i, text in enumerate([first["target"], hang, hang])))
    tools = ToolsConfig(exec_timeout=8.0)  # the reference imports torch: seconds on a loaded machine
    made = run(FeedbackConfig(samples=str(samples), data_dir=str(data_dir), out_dir=str(tmp_path / "fb"),
                              tools=tools))
    assert made["exec_snippets"] == made["exec_snippets_run"] == 2
    rows = read_jsonl(tmp_path / "fb" / "feedback.jsonl")
    assert [r["answers"]["code_executes"]["answer"] for r in rows] == ["yes", "no", "no"]
    assert "time" in rows[1]["answers"]["code_executes"]["detail"].lower()
    assert [r["label"] for r in rows] == ["accepted", "rejected", "rejected"]
    again = run(FeedbackConfig(samples=str(samples), data_dir=str(data_dir), out_dir=str(tmp_path / "fb"),
                               tools=tools, threshold=0.9))
    assert again["exec_snippets_run"] == 0 and again["exec_pass_rate"] == made["exec_pass_rate"]


def test_cached_verdicts_are_not_reused_once_the_sandbox_changed(tmp_path: Path, data_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A verdict is keyed by the sandbox's own code and env record too: after a change to the hermetic
    hooks the same snippet runs again instead of being served the old sandbox's verdict."""
    from rlaif_code.feedback import executes

    first = read_jsonl(data_dir / "train.jsonl")[0]
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"example_id": first["example_id"], "sample_id": 0, "text": first["target"]}) + "\n")

    def feedback(threshold: float) -> dict:
        return run(FeedbackConfig(samples=str(samples), data_dir=str(data_dir), out_dir=str(tmp_path / "fb"),
                                  threshold=threshold))

    assert feedback(0.5)["exec_snippets_run"] == 1
    assert feedback(0.6)["exec_snippets_run"] == 0  # same sandbox: served from the cache
    real = executes.sandbox_version
    monkeypatch.setattr(executes, "sandbox_version", lambda interpreter: "changed-" + real(interpreter))
    assert feedback(0.7)["exec_snippets_run"] == 1
