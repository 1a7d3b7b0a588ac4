"""The optional synth stage of `rlaif run`: absent by default (fingerprints as before), wired when enabled."""

from __future__ import annotations

from pathlib import Path

from rlaif_code.core.artifacts import read_json, read_jsonl
from rlaif_code.core.config import config_hash, to_dict
from rlaif_code.data import DataConfig
from rlaif_code.pipeline import PipelineConfig, run, stage_calls
from rlaif_code.ppo import PPOConfig
from rlaif_code.synth import SynthConfig
from tiny import CUSTOM_APIS, write_custom_hub


def test_disabled_synth_leaves_the_run_as_it_was(tmp_path: Path) -> None:
    cfg = PipelineConfig(run_dir=str(tmp_path))
    assert "synth" not in to_dict(cfg)
    calls = stage_calls(cfg, tmp_path)
    assert calls[0].name == "data"
    # The options added for custom hubs are left out of the stored config while unset: the config hash
    # (and so every finished stage's fingerprint) is the one from before they existed.
    stored = to_dict(calls[0].section)
    assert not {"api_db", "extra_train_files"} & set(stored)
    assert config_hash(calls[0].section) == config_hash(DataConfig(out_dir=str(tmp_path / "data")))
    assert "api_db" in to_dict(DataConfig(hub="custom", api_db="x", eval_file="e", extra_train_files=["t"]))


def test_hub_custom_reaches_ppos_dev_selection_and_feedback_rewards(tmp_path: Path) -> None:
    data = DataConfig(hub="custom", api_db="db.jsonl", eval_file="e.jsonl", extra_train_files=["t.jsonl"])
    cfg = PipelineConfig(data=data, ppo=PPOConfig(dev_every=5, reward_source="model+feedback"))
    def ppo_section(cfg: PipelineConfig) -> PPOConfig:
        return next(call.section for call in stage_calls(cfg, tmp_path) if call.name == "ppo")

    assert ppo_section(cfg).api_db == "db.jsonl"
    assert "api_db" not in to_dict(ppo_section(PipelineConfig()))  # unset: stored as before it existed


def test_enabled_synth_runs_first_and_feeds_the_data_stage(tmp_path: Path) -> None:
    api_db, eval_file = write_custom_hub(tmp_path / "hub")
    cfg = PipelineConfig(run_dir=str(tmp_path / "run"), synth=SynthConfig(enabled=True, per_api=2),
                         data=DataConfig(hub="custom", api_db=str(api_db), eval_file=str(eval_file),
                                         dev_fraction=0.0),
                         ppo=PPOConfig(dev_every=0))
    calls = {call.name: call for call in stage_calls(cfg, Path(cfg.run_dir))}
    assert list(calls)[:2] == ["synth", "data"]
    synth = calls["synth"].section
    assert (synth.hub, synth.api_db, synth.eval_file) == ("custom", str(api_db), str(eval_file))
    assert calls["data"].section.extra_train_files == [str(tmp_path / "run" / "synth" / "synth.jsonl")]
    assert calls["feedback"].section.api_db == str(api_db)
    run(cfg, only_stage="synth")
    run(cfg, only_stage="data")
    assert len(read_jsonl(tmp_path / "run" / "data" / "train.jsonl")) == 2 * len(CUSTOM_APIS)
    stages = read_json(tmp_path / "run" / "manifest.json")["stages"]
    assert stages["synth"]["status"] == stages["data"]["status"] == "done"
    assert stages["synth"]["metrics"]["n_examples"] == 2 * len(CUSTOM_APIS)
