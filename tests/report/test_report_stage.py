"""`rlaif report RUN_DIR`: the Markdown and HTML report from what the stages left in a run."""

from __future__ import annotations

import json

from rlaif_code.cli import main
from rlaif_code.core.artifacts import atomic_write_json
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


def test_report_from_a_run_directory(tmp_path, gorilla_data):
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
    atomic_write_json(run_dir / "reward" / "stage.json", {"metrics": {"eval_accuracy": 0.8, "eval_auc": 0.9}})
    assert main(["report", str(run_dir)]) == 0
    md = (run_dir / "report" / "report.md").read_text()
    page = (run_dir / "report" / "report.html").read_text()
    assert "| SFT | 12 |" in md and "| RLAIF | 12 |" in md
    accuracy_row = next(line for line in md.splitlines() if line.startswith("| accuracy |"))
    # 6 of 12 SFT answers call a non-existent API; RLAIF answers are the references.
    assert "| 50.00 | 100.00 | +50.00 |" in accuracy_row
    assert "eval_auc: 0.9" in md and "ppo_curves.png" in md and "Sample answers" in md
    assert "data:image/png;base64," in page and "src=\"http" not in page  # self-contained
    assert "Judge agreement with the tool checks\n\nNot measured in this run" in md


def test_report_without_results_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["report", str(tmp_path / "run")]) == 2
    assert "no evaluation results" in capsys.readouterr().err
