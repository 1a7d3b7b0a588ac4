"""`rlaif eval --exec`: executability of answers and of the reference code (the control)."""

from __future__ import annotations

import json
from pathlib import Path

from rlaif_code.cli import main
from rlaif_code.data.parse import format_answer
from tiny import make_minimal_venv


def test_eval_cli_reports_executability_and_control(tmp_path: Path) -> None:
    # A minimal venv as exec env: stdlib-only answers run, the reference code (torch) is
    # counted as failing for a missing package, which is what the control is there to show.
    env = tmp_path / "env"
    make_minimal_venv(env)
    answers = [
        "import math\nprint(math.sqrt(4))",
        "import torch\nmodel = torch.hub.load('pytorch/vision', 'resnet18', pretrained=True)",
        "def broken(:",
    ]
    responses = tmp_path / "answers.jsonl"
    responses.write_text("".join(
        json.dumps({"question_id": i + 1, "text": format_answer({"api_call": "x()", "code": code})}) + "\n"
        for i, code in enumerate(answers)))
    out = tmp_path / "result.json"
    assert main(["eval", "--hub", "th", "--responses", str(responses), "--out", str(out), "--metrics", "[ast]",
                 "--exec", "--exec_env", str(env), "--exec_timeout", "30", "--exec_workers", "2"]) == 0
    result = json.loads(out.read_text())
    assert result["executability"] == result["exec_run"] == 1 / 3
    assert result["exec_parse"] == 2 / 3 and result["exec_static"] == 1 / 3
    assert result["exec_control_run"] == 0.0  # torch is not in this env
    assert result["exec_missing_package"] == 1 / 3 and result["exec_control_missing_package"] == 1.0
    details = result["extra"]["exec"]
    assert details["tier"] == "run" and details["mode"] == "hermetic"
    assert details["model"]["run_failures_missing_package"] == 1
    assert details["control"]["run_missing_packages"] == {"torch": 3}
    items = result["items"]
    assert [item["executability"] for item in items] == [1.0, 0.0, 0.0]
    assert items[2]["exec_failure"].startswith("parse: SyntaxError")
    assert "executability" in result["per_domain"][items[0]["domain"]]


def test_eval_cli_static_tier_has_no_executability(tmp_path: Path) -> None:
    env = tmp_path / "env"
    make_minimal_venv(env)
    responses = tmp_path / "answers.jsonl"
    responses.write_text(json.dumps({"question_id": 1, "text": format_answer({"code": "import os"})}) + "\n")
    out = tmp_path / "result.json"
    assert main(["eval", "--hub", "th", "--responses", str(responses), "--out", str(out), "--metrics", "[ast]",
                 "--exec", "--exec_tier", "static", "--exec_env", str(env), "--no-show_table"]) == 0
    result = json.loads(out.read_text())
    assert result["exec_static"] == 1.0 and "executability" not in result and "exec_run" not in result
