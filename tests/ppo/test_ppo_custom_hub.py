"""PPO on a user's own API database (hub: custom): dev selection and feedback rewards match answers in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlaif_code.core.artifacts import read_jsonl
from rlaif_code.data import DataConfig
from rlaif_code.data import run as run_data
from rlaif_code.ppo import run
from rlaif_code.ppo.dev import answer_metrics, load_dev_set
from rlaif_code.ppo.rewards import feedback_scorer
from rlaif_code.synth import SynthConfig
from rlaif_code.synth import run as run_synth
from tiny import CUSTOM_APIS, custom_answer, write_custom_hub

RUBRIC = """questions:
  - {id: complete, text: 'Five fields?', weight: 1, by: answer_complete}
  - {id: exact, text: 'The reference API?', weight: 3, by: api_matches_reference}
"""


@pytest.fixture(scope="module")
def custom_hub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(API database, data stage output) of the invented Acme hub, trained on examples synthesized from it."""
    root = tmp_path_factory.mktemp("acme")
    api_db, eval_file = write_custom_hub(root / "hub")
    hub = {"hub": "custom", "api_db": str(api_db), "eval_file": str(eval_file)}
    run_synth(SynthConfig(**hub, per_api=3, out_dir=str(root / "synth")))
    data_dir = root / "data"
    run_data(DataConfig(**hub, extra_train_files=[str(root / "synth" / "synth.jsonl")], dev_fraction=0.25,
                        out_dir=str(data_dir)))
    return api_db, data_dir


def test_dev_answers_and_feedback_rewards_are_matched_in_the_users_database(tiny_cfg, custom_hub, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    api_db, data_dir = custom_hub
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text(RUBRIC)
    cfg = tiny_cfg(data_dir=str(data_dir), prompts_file=None, api_db=str(api_db), reward_source="feedback",
                   feedback_rubric=str(rubric), dev_every=1)
    # the tiny policy's vocabulary came from Gorilla's files; from here on the user's database is all there is
    monkeypatch.setenv("RLAIF_DATA", str(tmp_path / "no-gorilla-data-here"))

    dev = load_dev_set(cfg)
    assert dev is not None and dev.prompts
    references = [next(api for api in CUSTOM_APIS if api["api_call"] == ref["api_call"]) for ref in dev.references]
    exact = [custom_answer(api, "model = " + api["api_call"]) for api in references]
    assert answer_metrics(dev, exact, [10] * len(exact))["exact_match"] == 1.0

    train = read_jsonl(data_dir / "train.jsonl")[0]
    other = next(api for api in CUSTOM_APIS if api["api_call"] != train["reference_api"]["api_call"])
    score = feedback_scorer(cfg)
    wrong_api = custom_answer(other, "model = " + other["api_call"])
    assert score([train["prompt"]] * 2, [train["target"], wrong_api]) == [1.0, 0.25]

    result = run(cfg)
    assert result["steps"] == 2
    assert [row["step"] for row in read_jsonl(Path(cfg.out_dir) / "dev.jsonl")] == [0, 1, 2]
