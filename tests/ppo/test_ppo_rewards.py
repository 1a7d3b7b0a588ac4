"""Reward sources: the rubric's tool checks asked of each rollout online, alone or beside the reward model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlaif_code.core.artifacts import InputError, read_jsonl
from rlaif_code.ppo import run
from rlaif_code.ppo.rewards import feedback_scorer
from tiny import make_data_dir, save_tiny_reward_model

RUBRIC = """questions:
  - {id: complete, text: 'Five fields?', weight: 1, by: answer_complete}
  - {id: exact, text: 'The reference API?', weight: 3, by: api_matches_reference}
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, gorilla_data: Path) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("data"), gorilla_data, max_train=8)


def test_the_feedback_score_is_the_rubric_on_each_rollout(tiny_cfg, data_dir: Path, tmp_path: Path) -> None:
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text(RUBRIC)
    cfg = tiny_cfg(data_dir=str(data_dir), reward_source="feedback", feedback_rubric=str(rubric))
    score = feedback_scorer(cfg)
    row = read_jsonl(data_dir / "train.jsonl")[0]
    truncated = row["target"].split("<<<api_provider>>>")[0]
    other_api = row["target"].replace(row["reference_api"]["api_call"].split("'")[3], "surely_not_a_model")
    assert score([row["prompt"]] * 3, [row["target"], truncated, other_api]) == [1.0, 0.75, 0.25]
    with pytest.raises(InputError, match="not in .*train.jsonl"):
        score(["###Instruction: an unknown task\n###Output:"], [row["target"]])


@pytest.mark.parametrize("source", ["feedback", "model+feedback"])
def test_ppo_runs_on_each_reward_source(tiny_cfg, data_dir: Path, tmp_path: Path, source: str) -> None:
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text(RUBRIC)
    reward_model = save_tiny_reward_model(tmp_path / "rm") if source == "model+feedback" else tmp_path / "none"
    cfg = tiny_cfg(data_dir=str(data_dir), prompts_file=None, reward_source=source, feedback_rubric=str(rubric),
                   reward_model=str(reward_model))
    result = run(cfg)
    rows = read_jsonl(Path(cfg.out_dir) / "metrics.jsonl")
    assert result["steps"] == 2 and len(rows) == 2
    if source == "feedback":  # a random tiny model's gibberish has none of the five fields
        assert all(r["reward_mean"] == 0.0 for r in rows)


def test_the_supervised_anchor_pulls_the_policy_towards_the_reference_answers(tiny_cfg, data_dir: Path,
                                                                              tmp_path: Path) -> None:
    """A constant reward leaves only the KL term and the anchor: with the anchor, the reference
    answers' NLL falls step by step; the same run without it leaves no anchor_nll in the metrics."""
    from rlaif_code.ppo.rollout import load_reference_answers

    def constant(prompts: list[str], answers: list[str]) -> list[float]:
        return [0.0] * len(answers)

    common = dict(data_dir=str(data_dir), prompts_file=None, total_steps=4, max_new_tokens=4, learning_rate=3e-3)
    anchored = tiny_cfg(anchor_coef=1.0, out_dir=str(tmp_path / "anchored"), **common)
    run(anchored, reward_fn=constant)
    nll = [r["anchor_nll"] for r in read_jsonl(tmp_path / "anchored" / "metrics.jsonl")]
    assert nll[-1] < nll[0] - 0.1, nll
    plain = tiny_cfg(out_dir=str(tmp_path / "plain"), **common)
    run(plain, reward_fn=constant)
    assert all("anchor_nll" not in r for r in read_jsonl(tmp_path / "plain" / "metrics.jsonl"))

    bad = tmp_path / "bad"
    bad.mkdir()
    row = read_jsonl(data_dir / "train.jsonl")[0]
    (bad / "train.jsonl").write_text(json.dumps({**row, "target": ""}) + "\n")
    with pytest.raises(InputError, match=r"bad/train.jsonl:1: .*'target'.*anchor_coef"):
        load_reference_answers(tiny_cfg(data_dir=str(bad), prompts_file=None, anchor_coef=1.0), None)
