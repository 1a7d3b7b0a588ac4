"""API-constrained decoding in `rlaif run`: the sample stage and the eval answers read the run's API database
when it is on, and a run that leaves it off keeps the stored config (and fingerprints) it had before."""

from __future__ import annotations

from pathlib import Path

from rlaif_code.core.config import to_dict
from rlaif_code.data import DataConfig
from rlaif_code.evaluate.compare import CompareInputs, EvaluateSection, decoding
from rlaif_code.pipeline import PipelineConfig, stage_calls
from rlaif_code.sample import SampleConfig


def _sample_section(cfg: PipelineConfig, run_dir: Path) -> SampleConfig:
    return next(call.section for call in stage_calls(cfg, run_dir) if call.name == "sample")


def test_constrained_sampling_reads_the_data_section_s_api_database(tmp_path: Path) -> None:
    data = DataConfig(hub="custom", api_db="db.jsonl", eval_file="e.jsonl")
    section = _sample_section(PipelineConfig(data=data, sample=SampleConfig(constrain_api=True)), tmp_path)
    assert (section.hub, section.api_db) == ("custom", "db.jsonl")
    stored = to_dict(_sample_section(PipelineConfig(data=data), tmp_path))
    assert not {"constrain_api", "hub", "api_db"} & set(stored)


def test_eval_answers_are_constrained_by_the_run_s_database(tmp_path: Path) -> None:
    inputs = CompareInputs(data_dir=tmp_path, models={}, samples_dir=tmp_path, out_dir=tmp_path, hub="th",
                           data="gorilla", seed=0)
    on = decoding(EvaluateSection(sample=SampleConfig(temperature=0.0, num_samples=1, constrain_api=True)), inputs)
    assert (on.constrain_api, on.hub, on.data) == (True, "th", "gorilla")
    off = decoding(EvaluateSection(), inputs)
    assert off.hub is None and not off.constrain_api
