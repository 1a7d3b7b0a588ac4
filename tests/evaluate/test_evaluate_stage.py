"""The evaluator against Gorilla's own released answers, and on hand-made answers."""

from __future__ import annotations

import json

import pytest

from rlaif_code.cli import main
from rlaif_code.data.apibench import load_api_database
from rlaif_code.data.ast_match import AstMatcher, api_pattern, extract_api_call
from rlaif_code.data.source import DataSource
from rlaif_code.evaluate import EvalConfig, evaluate


@pytest.fixture(scope="module")
def hf_result(tmp_path_factory):
    from tiny import gorilla_dir

    out = tmp_path_factory.mktemp("eval") / "result.json"
    responses = gorilla_dir() / "responses" / "response_huggingface_Gorilla_FT_0_shot.jsonl"
    assert main(["eval", "--hub", "hf", "--responses", str(responses), "--out", str(out),
                 "--data", str(gorilla_dir())]) == 0
    return json.loads(out.read_text())


def test_reproduces_gorilla_released_script_on_gorilla_answers(hf_result):
    # Gorilla's own ast_eval_hf.py prints 69.36% accuracy and 10.95% hallucination here.
    assert hf_result["n"] == 904
    assert abs(100 * hf_result["accuracy"] - 69.36) < 0.2
    assert abs(100 * hf_result["hallucination"] - 10.95) < 0.2
    assert abs(hf_result["accuracy"] + hf_result["hallucination"] + hf_result["error"] - 1) < 1e-9


def test_result_json_keys_are_fractions(hf_result):
    for key in ("accuracy", "hallucination", "error", "exact_match", "rouge", "codebleu", "rouge1", "rouge2",
                "rougeL", "rougeLsum", "codebleu_ngram_match", "codebleu_weighted_ngram_match",
                "codebleu_syntax_match", "codebleu_dataflow_match"):
        assert 0.0 <= hf_result[key] <= 1.0, key
    # The stricter metric can only be at most what the domain-level one allows plus errors.
    assert hf_result["exact_match"] <= hf_result["accuracy"] + hf_result["error"]
    assert len(hf_result["items"]) == 904 and sum(r["n"] for r in hf_result["per_domain"].values()) == 904
    mean_rouge = sum(hf_result[k] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")) / 4
    assert abs(mean_rouge - hf_result["rouge"]) < 1e-9


@pytest.fixture(scope="module")
def hf_matcher():
    from tiny import gorilla_dir

    return AstMatcher(load_api_database(DataSource.resolve(gorilla_dir()), "hf"), "hf")


REF = {"domain": "Natural Language Processing Feature Extraction",
       "api_call": "AutoModel.from_pretrained('dmis-lab/biobert-v1.1')"}


def test_exact_reference_call_is_correct_and_exact(hf_matcher):
    result = hf_matcher.evaluate("<<<api_call>>>: AutoModel.from_pretrained('dmis-lab/biobert-v1.1')\n"
                                 "<<<api_provider>>>: HF", REF)
    assert result.outcome == "correct" and result.exact


def test_same_domain_other_model_is_correct_but_not_exact(hf_matcher):
    # YituTech/conv-bert-base is another Feature Extraction API in the database.
    result = hf_matcher.evaluate("<<<api_call>>>: AutoModel.from_pretrained('YituTech/conv-bert-base')\n"
                                 "<<<api_provider>>>: x", REF)
    assert result.outcome == "correct" and not result.exact


def test_invented_model_is_a_hallucination(hf_matcher):
    result = hf_matcher.evaluate("<<<api_call>>>: AutoModel.from_pretrained('me/not-a-model')\n"
                                 "<<<api_provider>>>: x", REF)
    assert result.outcome == "hallucination" and not result.exact


def test_real_model_of_another_domain_is_an_error(hf_matcher):
    call = "pipeline('summarization', model='facebook/bart-large-cnn')"
    result = hf_matcher.evaluate(f"<<<api_call>>>: {call}\n<<<api_provider>>>: x", REF)
    assert result.outcome == "error" and not result.exact


def test_api_call_cut_like_gorilla():
    assert extract_api_call("<<<api_call>>>: f('a')\n<<<api_provider>>>: p", "hf") == "f('a')"
    assert extract_api_call("no marker f('a')", "hf") == "no marker f('a')"
    assert extract_api_call("no marker f('a')", "th") is None
    # No ')' at all: Gorilla's slice [start + 2 : -1] drops the segment's last character.
    assert extract_api_call("<<<api_call>>>: abc\n<<<api_provider>>>", "hf") == "abc\n<<"


def test_required_arguments_per_hub():
    call = "torch.hub.load(repo_or_dir='pytorch/vision', model='resnet50', pretrained=True)"
    assert api_pattern(call, "th").args == ("pytorch/vision", "resnet50")
    assert api_pattern(call, "hf").args == ("pytorch/vision", "resnet50", "True")
    assert api_pattern("hub.KerasLayer('https://tfhub.dev/x/1')", "tf").args == ("https://tfhub.dev/x/1",)
    assert api_pattern("model = f('a')", "hf") is None  # an assignment is not a call: never matches


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_empty_answer_counts_as_gorilla_counts_it(tmp_path, gorilla_data):
    answers = _write(tmp_path / "a.jsonl", [{"question_id": 1, "text": ""}, {"question_id": 2}])
    hf = evaluate(EvalConfig(hub="hf", responses=str(answers), metrics=["ast"], show_table=False))
    # hf parses the whole (empty) text, which matches nothing: hallucination; no 'text': error.
    assert [i["outcome"] for i in hf["items"]] == ["hallucination", "error"]
    th = evaluate(EvalConfig(hub="th", responses=str(answers), metrics=["ast"], show_table=False))
    assert [i["outcome"] for i in th["items"]] == ["error", "error"]  # th: no api_call is an error


def test_rouge_and_codebleu_score_the_reference_code_perfectly(tmp_path, gorilla_data):
    from rlaif_code.data.apibench import load_examples
    from rlaif_code.data.parse import format_answer

    examples = load_examples(gorilla_data / "apibench" / "torchhub_eval.json", "th")[:5]
    answers = _write(tmp_path / "a.jsonl", [{"question_id": e.question_id, "text": format_answer(e.fields())}
                                            for e in examples])
    result = evaluate(EvalConfig(hub="th", responses=str(answers), show_table=False))
    assert result["rouge"] > 0.99 and result["codebleu"] > 0.99 and result["accuracy"] == 1.0
    assert result["exact_match"] == 1.0


def test_unknown_question_id_is_named(tmp_path, capsys):
    answers = _write(tmp_path / "a.jsonl", [{"question_id": 1, "text": "x"}, {"question_id": 5000, "text": "x"}])
    assert main(["eval", "--hub", "hf", "--responses", str(answers)]) == 2
    err = capsys.readouterr().err
    assert "a.jsonl:2" in err and "5000" in err


def test_malformed_answer_line_is_named(tmp_path, capsys):
    answers = tmp_path / "a.jsonl"
    answers.write_text('{"question_id": 1, "text": "x"}\n{"question_id": 2, "text": \n')
    assert main(["eval", "--hub", "hf", "--responses", str(answers)]) == 2
    assert "a.jsonl:2" in capsys.readouterr().err


def test_unknown_metric_fails_loudly(tmp_path, capsys):
    answers = _write(tmp_path / "a.jsonl", [{"question_id": 1, "text": "x"}])
    assert main(["eval", "--hub", "hf", "--responses", str(answers), "--metrics", "[ast, bleurt]"]) == 2
    assert "unknown metric 'bleurt'" in capsys.readouterr().err


def test_our_generations_are_matched_by_example_id(tmp_path, gorilla_data):
    answers = _write(tmp_path / "a.jsonl", [{"example_id": "torchhub_eval:3", "sample_id": 0, "text": "x"}])
    result = evaluate(EvalConfig(hub="th", responses=str(answers), metrics=["ast"], show_table=False))
    assert result["items"][0]["question_id"] == 3
    bad = _write(tmp_path / "b.jsonl", [{"example_id": "nope:1", "text": "x"}])
    with pytest.raises(Exception, match=r"b\.jsonl:1.*nope:1"):
        evaluate(EvalConfig(hub="th", responses=str(bad), metrics=["ast"], show_table=False))
