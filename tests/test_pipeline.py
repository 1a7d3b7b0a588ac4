"""End to end: every stage of the method on a tiny model, then resume, invalidation and refusals."""

from __future__ import annotations

import json

import pytest
import yaml

from rlaif_code.cli import main
from tiny import save_tiny_causal_lm


def _register_plugin_check() -> None:
    """A random tiny model's answers all fail the real checks alike, which leaves the reward
    model one class to learn. A plugin check (the registry is open to users' own checks)
    that splits gibberish roughly in half gives the wiring test both labels."""
    from rlaif_code.feedback.tools import TOOL_CHECKS

    if "test_has_digit" not in TOOL_CHECKS:
        TOOL_CHECKS.add("test_has_digit", lambda ctx: ("yes", None) if any(c.isdigit() for c in ctx.text) else ("no", None))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    model = save_tiny_causal_lm(root / "tiny-model")
    _register_plugin_check()
    rubric = root / "rubric.yaml"
    rubric.write_text(yaml.safe_dump({"name": "wiring", "questions": [
        {"id": "syntax", "text": "Is the code free of syntax errors?", "weight": 1.0, "by": "syntax"},
        {"id": "digit", "text": "Does the answer contain a digit?", "weight": 1.0, "by": "test_has_digit"}]}))
    config = {
        "run_dir": str(root / "run"),
        "seed": 1,
        "data": {"hub": "th", "max_train": 8, "max_eval": 4},
        "sft": {"model": str(model), "max_steps": 2, "batch_size": 4, "max_length": 256, "learning_rate": 1e-3},
        "sample": {"num_samples": 4, "max_new_tokens": 48, "temperature": 1.0, "batch_size": 16},
        "feedback": {"judge": "tools", "rubric": str(rubric), "threshold": 0.5},
        "reward": {"max_steps": 2, "batch_size": 4, "max_length": 256, "heldout_fraction": 0.25},
        "ppo": {"total_steps": 2, "batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 16,
                "save_every": 1},
        "evaluate": {"sample": {"max_new_tokens": 24, "temperature": 0.0, "num_samples": 1},
                     "score": {"metrics": ["ast", "rouge", "codebleu"]}},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", "--config", str(path)]) == 0
    return root, path


def test_every_stage_ran_and_the_manifest_says_so(tiny_run):
    root, _ = tiny_run
    run_dir = root / "run"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [s for s, e in manifest["stages"].items() if e["status"] == "done"] == [
        "data", "sft", "sample", "feedback", "reward", "ppo", "evaluate", "report"]
    assert manifest["seed"] == 1 and manifest["versions"]["torch"]
    for name in ("sft", "rlaif", "reference"):
        result = json.loads((run_dir / "eval" / f"{name}.json").read_text())
        assert result["n"] == 4 and 0 <= result["accuracy"] <= 1
    assert json.loads((run_dir / "eval" / "reference.json").read_text())["accuracy"] == 1.0
    assert (run_dir / "report" / "report.html").is_file()
    assert len((run_dir / "ppo" / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_finished_run_is_skipped_and_a_changed_section_reruns_downstream(tiny_run, capsys):
    root, path = tiny_run
    run_dir = root / "run"
    before = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert main(["run", "--config", str(path)]) == 0
    after = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert all(after[s]["started"] == before[s]["started"] for s in before)  # nothing reran
    # A change to the PPO section reruns ppo, evaluate and report only.
    assert main(["run", "--config", str(path), "--set", "ppo.learning_rate=2e-5"]) == 0
    again = json.loads((run_dir / "manifest.json").read_text())["stages"]
    rerun = [s for s in again if again[s]["started"] != after[s]["started"]]
    assert rerun == ["ppo", "evaluate", "report"]


def test_only_reruns_one_stage(tiny_run):
    root, path = tiny_run
    run_dir = root / "run"
    before = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert main(["run", "--config", str(path), "--set", "ppo.learning_rate=2e-5", "--only", "report"]) == 0
    after = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert [s for s in after if after[s]["started"] != before[s]["started"]] == ["report"]


def test_run_dir_of_another_config_is_refused_unless_forced(tiny_run, tmp_path, capsys):
    root, path = tiny_run
    other = tmp_path / "other.yaml"
    other.write_text(path.read_text())
    assert main(["run", "--config", str(other), "--only", "report"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["run", "--config", str(other), "--only", "report", "--force"]) == 0


def test_unknown_key_in_a_section_is_named(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("sft:\n  learning_rat: 0.1\n")
    assert main(["run", "--config", str(path)]) == 2
    assert "sft.learning_rat" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["demo", "torchhub-cpu", "hf-cpu", "paper"])
def test_shipped_configs_load(name):
    from conftest import REPO_ROOT
    from rlaif_code.config import load_config
    from rlaif_code.pipeline import PipelineConfig

    cfg = load_config(PipelineConfig, REPO_ROOT / "configs" / f"{name}.yaml")
    assert cfg.run_dir == f"runs/{name}"


def test_rerunning_a_stage_alone_marks_later_stages_stale(tiny_run):
    root, path = tiny_run
    run_dir = root / "run"
    assert main(["run", "--config", str(path), "--only", "ppo", "--force"]) == 0
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert stages["ppo"]["status"] == "done"
    assert stages["evaluate"]["status"] == "stale" and stages["report"]["status"] == "stale"
    before = stages
    assert main(["run", "--config", str(path)]) == 0
    after = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert [s for s in after if after[s]["started"] != before[s]["started"]] == ["evaluate", "report"]
