"""Resume: a run continues from its last checkpoint as an unbroken run would, and only its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlaif_code.core.artifacts import InputError, read_jsonl
from rlaif_code.ppo import run
from rlaif_code.ppo.config import PPOLoraSettings


def test_resume_continues_from_the_last_checkpoint_and_matches_an_unbroken_run(tmp_path, tiny_cfg, count_e,
                                                                               final_weights):
    unbroken = run(tiny_cfg(out_dir=str(tmp_path / "a"), total_steps=4, save_every=2), reward_fn=count_e)
    assert unbroken["resumed_from_step"] == 0

    first = run(tiny_cfg(out_dir=str(tmp_path / "b"), total_steps=2, save_every=2), reward_fn=count_e)
    assert first["steps"] == 2
    resumed = run(tiny_cfg(out_dir=str(tmp_path / "b"), total_steps=4, save_every=2), reward_fn=count_e)
    assert resumed["resumed_from_step"] == 2
    assert [r["step"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl")] == [1, 2, 3, 4]
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(torch.equal(a[name], b[name]) for name in a)  # nothing lost, nothing redone differently
    with pytest.raises(InputError, match="past total_steps=3"):
        run(tiny_cfg(out_dir=str(tmp_path / "b"), total_steps=3, save_every=2), reward_fn=count_e)


def test_killed_run_resumes_after_its_last_checkpoint(tiny_cfg, count_e):
    calls = {"n": 0}

    def dies_at_step_3(prompts, answers):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return count_e(prompts, answers)

    cfg = tiny_cfg(total_steps=4, save_every=2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, reward_fn=dies_at_step_3)
    out = Path(cfg.out_dir)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["run_identity.json", "step-000002"]
    assert not (out / "stage.json").exists()
    result = run(cfg, reward_fn=count_e)
    assert result["resumed_from_step"] == 2
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4]
    assert json.loads((out / "checkpoints" / "step-000004" / "checkpoint.json").read_text())["step"] == 4


def test_a_resume_may_change_budgets_and_logging_but_not_what_the_run_is(tiny_cfg, count_e):
    run(tiny_cfg(total_steps=2, save_every=2), reward_fn=count_e)
    with pytest.raises(InputError, match=r"other settings \(value_head\)"):
        run(tiny_cfg(total_steps=3, value_head="separate"), reward_fn=count_e)
    with pytest.raises(InputError, match=r"other settings \(learning_rate, lora\)"):
        run(tiny_cfg(total_steps=3, learning_rate=1e-4, lora=PPOLoraSettings(enabled=True)), reward_fn=count_e)
    result = run(tiny_cfg(total_steps=3, save_every=3, keep_checkpoints=1, log_every=2), reward_fn=count_e)
    assert result["resumed_from_step"] == 2 and result["steps"] == 3
