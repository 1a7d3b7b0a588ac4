"""The PPO stage end to end: a learning run on a toy reward, the CLI, reward models, LoRA, options."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlaif_code.core.artifacts import InputError, read_jsonl, read_stage_record
from rlaif_code.core.config import ConfigError
from rlaif_code.ppo import run
from rlaif_code.ppo.config import PPOLoraSettings
from rlaif_code.ppo.setup import make_accelerator
from tiny import save_tiny_causal_lm, save_tiny_reward_model, tiny_tokenizer


def test_ppo_learns_a_toy_reward_with_bounded_kl(tiny_cfg, count_e):
    """Reward = number of 'e' in the answer. With kl_coef 0.5 the KL-regularised optimum is
    interior, so the reward must rise while the KL to the reference stays bounded."""
    cfg = tiny_cfg(total_steps=40, batch_size=16, mini_batch_size=8, ppo_epochs=2, max_new_tokens=12,
                   learning_rate=1e-2, kl_coef=0.5, kl_mode="fixed", save_every=40)
    result = run(cfg, reward_fn=count_e)
    rows = read_jsonl(Path(cfg.out_dir) / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 41))
    rewards = [r["reward_mean"] for r in rows]
    kls = [r["kl"] for r in rows]
    start, end = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    print(f"toy reward: first 5 steps {start:.2f} -> last 5 steps {end:.2f}; KL last 5 {sum(kls[-5:]) / 5:.2f}\n"
          f"  reward every 5th step {[round(r, 1) for r in rewards[::5]]}\n  KL {[round(k, 1) for k in kls[::5]]}")
    assert end > start + 2.0, rewards
    assert max(kls[-10:]) < 30.0, kls  # a collapsed policy (one token always) would be at ~77 nats
    assert all(math.isfinite(r["policy_loss"]) and math.isfinite(r["value_loss"]) for r in rows)
    assert result["reward_mean_last"] == rewards[-1]


def test_cli_ppo_with_tiny_reward_model(tmp_path, write_prompts):
    from transformers import AutoModelForCausalLM

    from rlaif_code.cli import main

    policy = save_tiny_causal_lm(tmp_path / "policy")
    reward = save_tiny_reward_model(tmp_path / "reward")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_prompts(data_dir / "train.jsonl")
    out = tmp_path / "ppo"
    argv = ["ppo", "--policy", str(policy), "--reward_model", str(reward), "--data_dir", str(data_dir),
            "--out_dir", str(out), "--total_steps", "2", "--batch_size", "4", "--mini_batch_size", "2",
            "--ppo_epochs", "1", "--max_new_tokens", "8", "--missing_eos_penalty", "1.0", "--bf16", "off",
            "--dev_every", "0"]
    assert main(argv) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward_mean", "reward_std", "kl", "entropy", "clip_fraction", "approx_kl", "policy_loss",
                "value_loss", "explained_variance", "response_length", "tokens_per_s", "step_seconds"):
        assert key in rows[0]
    record = read_stage_record(out / "model")
    assert record["stage"] == "ppo" and record["config"]["reward_model"] == str(reward)
    assert read_stage_record(out)["finished"]
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.vocab_size == len(tiny_tokenizer())
    assert list((out / "tb").iterdir())  # TensorBoard events
    assert main(argv) == 0  # finished with this config: skipped


def test_reward_model_with_another_tokenizer_reads_retokenized_text(tmp_path, tiny_cfg, instructions):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(instructions * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[EOS]", "[UNK]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    other = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]")
    assert other.get_vocab() != tiny_tokenizer().get_vocab()
    reward = save_tiny_reward_model(tmp_path / "reward", tokenizer=other)
    result = run(tiny_cfg(reward_model=str(reward), total_steps=1))
    assert result["steps"] == 1 and math.isfinite(result["reward_mean_last"])


def test_lora_uses_the_adapter_free_network_as_reference_and_saves_merged(tiny_cfg, count_e, final_weights):
    from transformers import AutoModelForCausalLM

    cfg = tiny_cfg(total_steps=1, lora=PPOLoraSettings(enabled=True, r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    run(cfg, reward_fn=count_e)
    row = read_jsonl(Path(cfg.out_dir) / "metrics.jsonl")[0]
    assert abs(row["kl"]) < 1e-5  # LoRA's B starts at zero: policy == reference at step 1
    saved = final_weights(Path(cfg.out_dir))
    assert not any("lora" in name for name in saved)
    AutoModelForCausalLM.from_pretrained(Path(cfg.out_dir) / "model")


def test_separate_value_model_recomputed_logprobs_and_adaptive_kl_run(tiny_cfg, count_e):
    cfg = tiny_cfg(total_steps=2, value_head="separate", kl_mode="adaptive", kl_target=0.01,
                   kl_horizon=4, grad_accum=2, mini_batch_size=4, whiten_rewards=True, rollout_logprobs="recompute")
    result = run(cfg, reward_fn=count_e)
    rows = read_jsonl(Path(cfg.out_dir) / "metrics.jsonl")
    assert rows[1]["kl_coef"] != rows[0]["kl_coef"]
    assert result["kl_coef"] != cfg.kl_coef


def test_bad_inputs_are_refused(tmp_path, tiny_cfg, count_e):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="no prompts"):
        run(tiny_cfg(prompts_file=str(empty)), reward_fn=count_e)
    no_prompt = tmp_path / "bad.jsonl"
    no_prompt.write_text(json.dumps({"instruction": "x"}) + "\n")
    with pytest.raises(InputError, match="bad.jsonl:1"):
        run(tiny_cfg(prompts_file=str(no_prompt)), reward_fn=count_e)
    with pytest.raises(ConfigError, match="mini_batch_size"):
        run(tiny_cfg(batch_size=5, mini_batch_size=2), reward_fn=count_e)


def test_ppo_accepts_a_precision_other_than_an_earlier_stages_in_the_same_process():
    # Seen on an H100: SFT's Trainer (bf16) left the process-wide AcceleratorState set, and PPO with
    # bf16 off then failed. On CPU, accelerate's bf16 state reproduces it.
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)  # whatever an earlier test left
    Accelerator(mixed_precision="bf16")
    try:
        accelerator = make_accelerator(1, "no")
        assert accelerator.mixed_precision == "no"
        assert make_accelerator(1, "no").mixed_precision == "no"  # same precision: state kept, no error
    finally:
        AcceleratorState._reset_state(reset_partial_state=False)


def test_incomplete_answer_penalty_lowers_what_ppo_optimises(tmp_path, tiny_cfg):
    # A random tiny model writes no Gorilla fields at all: every answer is incomplete.
    def zero(prompts, answers):
        return torch.zeros(len(answers))

    run(tiny_cfg(total_steps=1, incomplete_answer_penalty=2.0), reward_fn=zero)
    row = read_jsonl(tmp_path / "ppo" / "metrics.jsonl")[0]
    assert row["incomplete_fraction"] == 1.0
    assert row["reward_mean"] == 0.0 and row["penalized_reward_mean"] == -2.0
