"""End to end: every stage of the method on a tiny model, a rerun that skips, and one that invalidates;
the manifest logic itself is tested on stub stages in test_manifest.py."""

from __future__ import annotations

import json

import pytest

from rlaif_code.cli import main
from tiny import tiny_pipeline_config


def _runs(run_dir) -> dict[str, int]:
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    return {name: entry["runs"] for name, entry in stages.items()}


def test_every_stage_runs_then_a_rerun_skips_and_a_changed_section_reruns_downstream(tmp_path):
    path = tiny_pipeline_config(tmp_path)
    run_dir = tmp_path / "run"
    assert main(["run", "--config", str(path)]) == 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [s for s, e in manifest["stages"].items() if e["status"] == "done"] == [
        "data", "sft", "sample", "feedback", "reward", "rft", "ppo", "evaluate", "report"]
    assert manifest["seed"] == 1 and manifest["versions"]["torch"]
    assert manifest["machine"]["torch_threads"] >= 1 and manifest["machine"]["cpu_count"] >= 1
    # each stage's wall time and peak memory, for the results tables (a model's weights alone exceed 1 MiB)
    assert all(e["seconds"] >= 0 and e["peak_rss_mib"] > 1 for e in manifest["stages"].values())
    # the baselines RL has to beat are scored on the same items: best-of-n, Gorilla-7B's released answers
    for name in ("sft", "rlaif", "reference", "best_of_4", "best_of_8", "rft", "gorilla_ft_0_shot"):
        result = json.loads((run_dir / "eval" / f"{name}.json").read_text())
        assert result["n"] == 4 and 0 <= result["accuracy"] <= 1
    assert json.loads((run_dir / "eval" / "reference.json").read_text())["accuracy"] == 1.0
    assert (run_dir / "report" / "report.html").is_file()
    report = (run_dir / "report" / "report.md").read_text()
    assert "## Every model against SFT" in report and "| best-of-8 (SFT samples, reward model picks) |" in report
    assert "Dev-set selection: the output is step" in report
    assert len((run_dir / "ppo" / "metrics.jsonl").read_text().splitlines()) == 2
    first = _runs(run_dir)
    assert set(first.values()) == {1}

    assert main(["run", "--config", str(path)]) == 0
    assert _runs(run_dir) == first  # nothing reran

    # A change to the PPO section reruns ppo, evaluate and report only.
    assert main(["run", "--config", str(path), "--set", "ppo.learning_rate=2e-5"]) == 0
    again = _runs(run_dir)
    assert [s for s in again if again[s] != first[s]] == ["ppo", "evaluate", "report"]
    assert all(again[s] == 2 for s in ("ppo", "evaluate", "report"))


def test_unknown_key_in_a_section_is_named(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("sft:\n  learning_rat: 0.1\n")
    assert main(["run", "--config", str(path)]) == 2
    assert "sft.learning_rat" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["demo", "torchhub-cpu", "hf-cpu", "paper"])
def test_shipped_configs_load_and_are_consistent(name):
    from rlaif_code.core.config import load_config
    from rlaif_code.core.models import DEFAULT_MODELS
    from rlaif_code.feedback.judges import JUDGES
    from rlaif_code.feedback.rubric import load_rubric
    from rlaif_code.pipeline import PipelineConfig
    from tiny import REPO_ROOT

    path = REPO_ROOT / "configs" / f"{name}.yaml"
    cfg = load_config(PipelineConfig, path)
    assert cfg.run_dir == f"runs/{name}"
    # The hub is one the data and the scorer know, and the model is embedded or a Hugging Face id.
    assert cfg.data.hub in ("hf", "th", "tf")
    assert cfg.sft.model in DEFAULT_MODELS or cfg.sft.model.count("/") <= 1
    assert cfg.feedback.judge in JUDGES
    load_rubric(cfg.feedback.rubric)  # None is the packaged default
    # rubric paths in shipped configs are relative to the checkout, where `rlaif run` is started
    if cfg.ppo.feedback_rubric:
        assert load_rubric(REPO_ROOT / cfg.ppo.feedback_rubric).tool_questions
    # Eval answers are greedy, one per item; TorchHub answers need ~130 tokens, so no budget cuts them off.
    assert cfg.evaluate.sample.temperature == 0.0 and cfg.evaluate.sample.num_samples == 1
    assert cfg.ppo.batch_size % cfg.ppo.mini_batch_size == 0
    assert cfg.sample.max_new_tokens >= 128 and cfg.evaluate.sample.max_new_tokens >= 128
    # Executability is scored in every shipped config (the paper's headline metric).
    assert cfg.evaluate.score.exec and cfg.evaluate.score.exec_timeout >= 60
