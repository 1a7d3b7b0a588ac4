"""judge-check: agreement of an LLM judge with the tool answers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import cohen_kappa_score

from judge_server import ScriptedServer, chat_reply, last_user_message
from rlaif_code.cli import main
from rlaif_code.core.artifacts import InputError, read_json, read_jsonl
from rlaif_code.feedback.judge_check import JudgeCheckConfig, agreement, run
from rlaif_code.feedback.rubric import judge_check_rubric_path, load_rubric
from tiny import make_data_dir, write_samples


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, gorilla_data: Path) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("data"), gorilla_data)


def test_agreement_figures() -> None:
    pairs = [("yes", "yes"), ("yes", "no"), ("no", "no"), ("no", "no"), ("yes", "unparseable"),
             ("unparseable", "yes")]
    got = agreement(pairs)
    assert got["n"] == 6 and got["n_compared"] == 4
    assert got["accuracy"] == 0.75
    assert got["kappa"] == pytest.approx(cohen_kappa_score(["yes", "yes", "no", "no"], ["yes", "no", "no", "no"]))
    assert got["judge_unparseable"] == 1 and got["tool_undecided"] == 1
    assert got["confusion"] == {"tool_yes_judge_yes": 1, "tool_yes_judge_no": 1,
                                "tool_no_judge_yes": 0, "tool_no_judge_no": 2}
    # One label throughout on both sides: kappa is undefined, said as None rather than NaN.
    assert agreement([("yes", "yes")] * 3)["kappa"] is None
    assert agreement([("yes", "unparseable")])["accuracy"] is None


def test_judge_check_against_a_yes_sayer(tmp_path: Path, data_dir: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    write_samples(data_dir, samples)

    def yes_sayer(body: dict[str, Any], n: int):
        return chat_reply("Yes")

    with ScriptedServer(yes_sayer) as server:
        cfg = JudgeCheckConfig(samples=str(samples), data_dir=str(data_dir), n=9, seed=1,
                               out_dir=str(tmp_path / "check"))
        args = ["judge-check", "--samples", cfg.samples, "--data_dir", cfg.data_dir, "--n", "9", "--seed", "1",
                "--out_dir", cfg.out_dir, "--openai.base_url", server.url, "--openai.answer_mode", "text"]
        assert main(args) == 0
        asked = len(server.bodies)
    report = read_json(Path(cfg.out_dir) / "judge_check.json")
    n_questions = len(load_rubric(judge_check_rubric_path()).questions)
    assert report["n_answers"] == 9 and asked == 9 * n_questions
    imports = report["per_question"]["correct_imports"]
    assert imports["tool"] == "imports_resolve" and imports["judge_yes"] == 9
    # A judge that always says yes is right exactly where the tool says yes.
    assert imports["accuracy"] == pytest.approx(imports["tool_yes"] / 9)
    assert imports["kappa"] in (None, 0.0)
    rows = read_jsonl(Path(cfg.out_dir) / "judge_check_rows.jsonl")
    assert len(rows) == 9 * n_questions and {r["judge"] for r in rows} == {"yes"}
    assert report["pooled"]["n"] == 9 * n_questions


def test_judge_check_question_subset_and_errors(tmp_path: Path, data_dir: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    write_samples(data_dir, samples)

    def syntax_aware(body: dict[str, Any], n: int):
        # Knows exactly the one import error the samples contain.
        return chat_reply("No" if re.search(r"import torchh\b", last_user_message(body)) else "Yes")

    with ScriptedServer(syntax_aware) as server:
        from rlaif_code.feedback.judges.openai_judge import OpenAIJudgeConfig

        # a feedback file: the two exact answers accepted, the inexact one rejected
        feedback = tmp_path / "feedback.jsonl"
        feedback.write_text("".join(json.dumps({"label": label, "answers": {
            "calls_needed_api": {"answer": exact, "by": "tool:api_matches_reference"}}}) + "\n"
            for label, exact in [("accepted", "yes"), ("accepted", "yes"), ("rejected", "no")]))
        cfg = JudgeCheckConfig(samples=str(samples), data_dir=str(data_dir), n=100, questions=["correct_imports"],
                               openai=OpenAIJudgeConfig(base_url=server.url), out_dir=str(tmp_path / "c"),
                               feedback=str(feedback))
        metrics = run(cfg)
    assert metrics["labels_vs_outcomes"]["exact_api"]["accepted_if_yes"] == 1.0
    assert metrics["labels_vs_outcomes"]["exact_api"]["accepted_if_no"] == 0.0
    per = metrics["per_question"]
    assert list(per) == ["correct_imports"]
    assert per["correct_imports"]["n"] == len(read_jsonl(samples))  # n larger than the file: all of it
    assert per["correct_imports"]["accuracy"] == 1.0 and per["correct_imports"]["kappa"] == 1.0
    with pytest.raises(InputError, match="'complete' is not a tool-verified question"):
        run(JudgeCheckConfig(samples=str(samples), data_dir=str(data_dir), questions=["complete"],
                             out_dir=str(tmp_path / "x")))
    with pytest.raises(InputError, match="needs an LLM judge"):
        run(JudgeCheckConfig(samples=str(samples), data_dir=str(data_dir), judge="tools",
                             out_dir=str(tmp_path / "y")))
    json.dumps(metrics)  # the metrics are plain JSON


def test_smaller_n_is_a_prefix_of_larger_n_and_reuses_the_cache(tmp_path: Path, data_dir: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    write_samples(data_dir, samples)
    from rlaif_code.feedback.judges.openai_judge import OpenAIJudgeConfig

    picked = {}
    with ScriptedServer(lambda body, n: chat_reply("Yes")) as server:
        for n in (6, 3):
            cfg = JudgeCheckConfig(samples=str(samples), data_dir=str(data_dir), n=n, seed=5,
                                   questions=["no_syntax_errors"], cache_path=str(tmp_path / "cache.sqlite"),
                                   openai=OpenAIJudgeConfig(base_url=server.url, answer_mode="text"),
                                   out_dir=str(tmp_path / f"check{n}"))
            run(cfg)
            picked[n] = [(r["example_id"], r["sample_id"]) for r in read_jsonl(Path(cfg.out_dir) /
                                                                              "judge_check_rows.jsonl")]
        assert len(server.bodies) == 6  # the n=3 check was answered from the cache
    assert picked[3] == picked[6][:3]
