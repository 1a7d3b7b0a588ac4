"""`rlaif report RUN_DIR`: the Markdown and HTML report from what the stages left in a run."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from rlaif_code.cli import main
from rlaif_code.core.artifacts import InputError, atomic_write_json
from rlaif_code.data.apibench import load_examples
from rlaif_code.data.parse import format_answer
from rlaif_code.evaluate import EvalConfig, evaluate


def _answers(path, examples, broken: bool):
    rows = []
    for e in examples:
        fields = e.fields()
        if broken and e.question_id % 2:
            fields = {**fields, "api_call": "torch.hub.load('me/nothing', 'x')", "code": "pass"}
        rows.append({"example_id": e.example_id, "sample_id": 0, "prompt": e.instruction,
                     "text": format_answer(fields)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run_dir(tmp_path, gorilla_data):
    """A run directory as the stages leave it: SFT (half its calls broken) and RLAIF (the references)
    evaluated on 12 TorchHub items, PPO and dev curves, reward-model and feedback records."""
    examples = load_examples(gorilla_data / "apibench" / "torchhub_eval.json", "th")[:12]
    run_dir = tmp_path / "run"
    for name, broken in (("sft", True), ("rlaif", False)):
        (run_dir / "samples" / f"eval_{name}").mkdir(parents=True)
        answers = _answers(run_dir / "samples" / f"eval_{name}" / "samples.jsonl", examples, broken)
        atomic_write_json(run_dir / "eval" / f"{name}.json",
                          evaluate(EvalConfig(hub="th", responses=str(answers), label=name.upper(), show_table=False)))
    (run_dir / "ppo").mkdir()
    (run_dir / "ppo" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "reward_mean": 0.1 * s, "kl": 0.01 * s}) + "\n" for s in range(5)))
    (run_dir / "ppo" / "dev.jsonl").write_text("".join(json.dumps(
        {"step": s, "exact_match": e, "accuracy": 0.9, "hallucination": 0.0, "incomplete_fraction": 0.0,
         "distinct_api_calls": d, "reference_distinct_api_calls": 5, "mean_tokens": 120.0, "kl": 0.1 * s,
         "collapse": d == 1}) + "\n" for s, e, d in ((0, 0.1, 5), (2, 0.3, 4), (4, 0.2, 1))))
    atomic_write_json(run_dir / "ppo" / "stage.json", {"metrics": {
        "selected_step": 2, "select_metric": "exact_match", "stopped": "KL budget: over"}})
    atomic_write_json(run_dir / "reward" / "stage.json", {"metrics": {
        "n_rows": 40, "n_train": 36, "n_heldout": 4, "heldout_n": 4, "heldout_roc_auc": 0.9,
        "probe_accuracy": {"truncated": 0.75, "invented_name": 1.0, "n_pairs": {"truncated": 4, "invented_name": 4}}}})
    atomic_write_json(run_dir / "feedback" / "stage.json", {"metrics": {
        "n_answers": 40, "accepted": 12, "accepted_fraction": 0.3, "contrast_rate": 0.5, "judge": "tools",
        "yes_rate_by_question": {"code_executes": 0.9, "complete": None}, "skipped_llm_questions": ["complete"],
        "judge_stats": {"requests": 0, "errors": {}}}})
    return run_dir


def test_report_from_a_run_directory(tmp_path, gorilla_data):
    run_dir = _run_dir(tmp_path, gorilla_data)
    assert main(["report", str(run_dir)]) == 0
    md = (run_dir / "report" / "report.md").read_text()
    page = (run_dir / "report" / "report.html").read_text()
    assert "| SFT | 12 |" in md and "| RLAIF | 12 |" in md
    accuracy_row = next(line for line in md.splitlines() if line.startswith("| accuracy |"))
    # 6 of 12 SFT answers call a non-existent API; RLAIF answers are the references.
    assert "| 50.00 | 100.00 | +50.00 |" in accuracy_row
    # each section says in a sentence what its table shows, the deltas which metrics moved beyond noise
    assert "larger than the 95% interval: accuracy +50.00 (better)" in md
    assert "KL of the policy to the SFT model per answer (the k3 estimator, which cannot go negative)" in md
    assert "ppo_curves.png" in md and "Sample answers" in md
    assert "the output is step 2 by exact_match; PPO stopped early: KL budget: over" in md
    assert "| 2 | 30.00 | 90.00 | 0.00 | 0.00 | 4/5 | 120 | 0.2 | selected |" in md and "| COLLAPSE |" in md
    # feedback and reward figures in tables of their own; no judge table under the tools judge
    assert "| 40 | 12 | 30.00 |" in md and "| code_executes | 90.00 |" in md
    assert "| complete | not asked (tools judge) |" in md and "LLM judge:" not in md
    assert "| truncated | 75.00 | 4 |" in md and "| 0.9 |" in md
    assert "data:image/png;base64," in page and "src=\"http" not in page  # self-contained
    assert "Judge agreement with the tool checks\n\nNot measured in this run" in md


def test_report_of_an_sft_only_run_shows_no_empty_tables(tmp_path, gorilla_data):
    run_dir = _run_dir(tmp_path, gorilla_data)
    shutil.rmtree(run_dir / "samples" / "eval_rlaif")
    (run_dir / "eval" / "rlaif.json").unlink()
    atomic_write_json(run_dir / "manifest.json", {"stages": {"sft": {
        "status": "done", "seconds": 4268.2, "peak_rss_mib": 19512.4}}})
    assert main(["report", str(run_dir)]) == 0
    md = (run_dir / "report" / "report.md").read_text()
    assert "No RLAIF row to compare with SFT in this run." in md and "nothing to show" not in md
    assert "exact-API match of SFT on the eval items of each domain" in md and "RLAIF accuracy" not in md
    assert "| sft | done | 4268 | 19,512 |" in md


def test_report_without_results_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["report", str(tmp_path / "run")]) == 2
    assert "no evaluation results" in capsys.readouterr().err


def test_report_shows_an_llm_judge_check_as_tables(tmp_path, gorilla_data):
    run_dir = _run_dir(tmp_path, gorilla_data)
    agreement = {"n": 10, "n_compared": 9, "accuracy": 0.8, "kappa": None, "tool_yes": 7, "judge_yes": 9,
                 "judge_unparseable": 1}
    atomic_write_json(run_dir / "feedback" / "judge_check.json", {
        "judge": "openai:local-model", "n_answers": 10, "per_question": {"api_exists": {"tool": "api_exists",
                                                                                         **agreement}},
        "pooled": agreement, "labels_vs_outcomes": {"feedback": "f.jsonl", "n_answers": 40, "exact_api": {
            "rate": 0.05, "accepted_if_yes": 1.0, "accepted_if_no": 0.25, "share_of_accepted": 0.2}}})
    assert main(["report", str(run_dir)]) == 0
    md = (run_dir / "report" / "report.md").read_text()
    assert "Judge openai:local-model against the tool checks on 10 answers" in md
    assert "| api_exists | api_exists | 10 | 9 | 80.00 | undefined | 7 | 9 | 1 |" in md
    assert "| all questions |  | 10 | 9 | 80.00 |" in md
    assert "| exact_api | 5.00 | 100.00 | 25.00 | 20.00 |" in md and "```json" not in md


def test_report_screenshot_without_a_browser_names_the_key(tmp_path, gorilla_data, monkeypatch):
    from rlaif_code.report import ReportConfig, run

    run_dir = _run_dir(tmp_path, gorilla_data)
    monkeypatch.setenv("PATH", str(tmp_path / "no-browsers-here"))
    with pytest.raises(InputError, match="report.screenshot: no headless browser on PATH"):
        run(ReportConfig(run_dir=str(run_dir), screenshot=True))
    assert (run_dir / "report" / "report.html").is_file()  # the report itself was still written


@pytest.mark.skipif(not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
                    reason="no headless Chromium on this machine (apt-get install chromium)")
def test_report_screenshot_is_drawn_by_a_real_browser(tmp_path, gorilla_data):
    from rlaif_code.report import ReportConfig, run

    run_dir = _run_dir(tmp_path, gorilla_data)
    result = run(ReportConfig(run_dir=str(run_dir), screenshot=True, screenshot_size=[800, 1200]))
    png = (run_dir / "report" / "report.png").read_bytes()
    assert result["report_png"].endswith("report.png") and png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert (width, height) == (800, 1200)
