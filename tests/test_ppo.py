"""PPO: the maths against hand-computed numbers, a learning run on a toy reward, the CLI, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlaif_code import ppo
from rlaif_code.artifacts import InputError, read_jsonl, read_stage_record
from rlaif_code.config import ConfigError
from rlaif_code.data.prompts import build_prompt
from rlaif_code.ppo import (
    AdaptiveKLController,
    FixedKLController,
    PPOLoraSettings,
    PPOConfig,
    answer_ends,
    answer_logits,
    forward_inputs,
    packing_keeps_sequences_apart,
    sample_answers,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalized_rewards,
    left_pad,
    masked_whiten,
    prompt_indices,
    run,
    token_logprobs,
)
from tiny import save_tiny_causal_lm, tiny_causal_lm, tiny_tokenizer

INSTRUCTIONS = ["Load a pretrained image classifier", "Segment the objects in a street photo",
                "Detect faces in a video frame", "Translate English text to French",
                "Classify the sound in an audio clip", "Estimate depth from a single image"]


@pytest.fixture(autouse=True)
def _one_thread():
    # The 2 shared cores are often busy: one intra-op thread is several times faster
    # for these tiny models than two threads fighting over them.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_prompts(path: Path, instructions: list[str] = INSTRUCTIONS) -> Path:
    path.write_text("".join(json.dumps({"prompt": build_prompt(i)}) + "\n" for i in instructions))
    return path


def count_e(prompts: list[str], answers: list[str]) -> torch.Tensor:
    """Toy reward: how many times the letter 'e' appears in the answer."""
    return torch.tensor([float(a.count("e")) for a in answers])


def tiny_cfg(tmp_path: Path, **overrides) -> PPOConfig:
    policy = tmp_path / "policy"
    if not policy.exists():
        save_tiny_causal_lm(policy)
    prompts = tmp_path / "prompts.jsonl"
    if not prompts.exists():
        write_prompts(prompts)
    settings = dict(policy=str(policy), prompts_file=str(prompts), out_dir=str(tmp_path / "ppo"), total_steps=2,
                    batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=6, learning_rate=1e-3,
                    save_every=1, bf16=False)
    settings.update(overrides)
    return PPOConfig(**settings)


# ---------------------------------------------------------------- the maths


def test_gae_matches_hand_computed_values_with_padding():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.5, 1.0, 7.0]])
    values = torch.tensor([[0.5, 0.2, 0.1], [1.0, 0.3, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)  # row 2 ends after 2 tokens
    gamma, lam = 0.9, 0.8
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    # row 1: deltas 2 - 0.1 = 1.9; 0 + 0.9*0.1 - 0.2 = -0.11; 1 + 0.9*0.2 - 0.5 = 0.68
    a12 = 1.9
    a11 = -0.11 + gamma * lam * a12
    a10 = 0.68 + gamma * lam * a11
    # row 2: the state after token 2 is terminal (value 0); the padded reward 7 and value 9 count for nothing
    a21 = 1.0 + gamma * 0.0 - 0.3
    a20 = 0.5 + gamma * 0.3 - 1.0 + gamma * lam * a21
    expected = torch.tensor([[a10, a11, a12], [a20, a21, 0.0]])
    assert torch.allclose(advantages, expected, atol=1e-6)
    assert torch.allclose(returns, (expected + values) * mask, atol=1e-6)
    assert returns[1, 2] == 0.0


def test_gae_with_gamma_and_lambda_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.1, -0.2, 3.0, 0.0]])
    values = torch.tensor([[0.4, 0.3, 0.2, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(returns, torch.tensor([[2.9, 2.8, 3.0, 0.0]]), atol=1e-6)
    assert torch.allclose(advantages, torch.tensor([[2.5, 2.5, 2.8, 0.0]]), atol=1e-6)


def test_clipped_policy_loss_matches_hand_computed():
    new = torch.tensor([[-1.0, -0.5, -3.0]])
    old = torch.tensor([[-1.2, -0.4, -0.1]])
    adv = torch.tensor([[1.0, -2.0, 5.0]])
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)  # the third token is padding
    loss, stats = clipped_policy_loss(new, old, adv, mask, clip_range=0.2)
    r0, r1 = math.exp(0.2), math.exp(-0.1)  # 1.2214 (clipped to 1.2), 0.9048 (inside the range)
    token0 = max(-1.0 * r0, -1.0 * 1.2)  # = -1.2: the clipped term is the pessimistic one
    token1 = max(2.0 * r1, 2.0 * r1)
    assert loss.item() == pytest.approx((token0 + token1) / 2, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)
    approx_kl = ((r0 - 1) - 0.2 + (r1 - 1) + 0.1) / 2
    assert stats["approx_kl"].item() == pytest.approx(approx_kl, abs=1e-6)


def test_clipped_policy_loss_gradient_vanishes_once_clipped():
    new = torch.tensor([[math.log(1.5)]], requires_grad=True)
    loss, _ = clipped_policy_loss(new, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool), 0.2)
    loss.backward()
    assert new.grad.item() == 0.0


def test_clipped_value_loss_matches_hand_computed():
    values = torch.tensor([[1.0, 0.0, 2.0]])
    old = torch.tensor([[0.5, 0.1, 0.0]])
    returns = torch.tensor([[0.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    loss, clip_fraction = clipped_value_loss(values, old, returns, mask, clip_range_value=0.2)
    # token 0: unclipped (1-0)^2 = 1, clipped 0.5+0.2 = 0.7 -> 0.49; the max keeps 1
    # token 1: v - old = -0.1 is inside the range, both terms (0-1)^2 = 1; token 2 is padding
    assert loss.item() == pytest.approx(0.5 * (1.0 + 1.0) / 2)
    assert clip_fraction.item() == 0.0
    values = torch.tensor([[0.0]])
    loss, clip_fraction = clipped_value_loss(values, torch.tensor([[1.0]]), torch.tensor([[2.0]]),
                                             torch.ones(1, 1, dtype=torch.bool), 0.2)
    # unclipped (0-2)^2 = 4; clipped 0.8 -> (0.8-2)^2 = 1.44; the max keeps 4
    assert loss.item() == pytest.approx(0.5 * 4.0)
    assert clip_fraction.item() == 0.0
    loss, clip_fraction = clipped_value_loss(torch.tensor([[3.0]]), torch.tensor([[1.0]]), torch.tensor([[0.0]]),
                                             torch.ones(1, 1, dtype=torch.bool), 0.2)
    # unclipped 9, clipped 1.2 -> 1.44; the max keeps 9
    assert loss.item() == pytest.approx(4.5)
    loss, clip_fraction = clipped_value_loss(torch.tensor([[1.5]]), torch.tensor([[1.0]]), torch.tensor([[3.0]]),
                                             torch.ones(1, 1, dtype=torch.bool), 0.2)
    # unclipped (1.5-3)^2 = 2.25; clipped 1.2 -> 3.24: the clipped loss dominates
    assert loss.item() == pytest.approx(0.5 * 3.24)
    assert clip_fraction.item() == 1.0


def test_kl_penalty_per_token_with_score_on_last_answer_token():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -9.0, -9.0]])
    ref_logprobs = torch.tensor([[-1.5, -1.0, -0.5], [-0.1, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = kl_penalized_rewards(logprobs, ref_logprobs, scores, mask, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0], [-0.2, 0.0, 0.0]]))
    expected = torch.tensor([[-0.05, 0.1, 0.0 + 2.0], [0.02 - 1.0, 0.0, 0.0]])
    assert torch.allclose(rewards, expected, atol=1e-6)


def test_adaptive_kl_controller_follows_ziegler_et_al():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=9.0, n_steps=256)  # error 0.5, clipped to 0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 256 / 10000))
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=6.6, n_steps=100)  # error 0.1: inside the clip
    assert ctl.value == pytest.approx(0.1 * (1 + 0.1 * 100 / 10000))
    ctl.update(current_kl=0.0, n_steps=10000)  # error -1, clipped to -0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.1 * 100 / 10000) * 0.8)
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 10)
    assert fixed.value == 0.05


def test_masked_whiten_ignores_padding():
    values = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    out = masked_whiten(values, mask)
    assert torch.allclose(out, torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-4)


# ---------------------------------------------------------------- rollouts


def test_answer_ends_at_end_token_or_stop_string():
    tok = tiny_tokenizer()
    eos = tok.eos_token_id
    stop_ids = [eos]
    answer = tok(" <<<domain>>>: vision", add_special_tokens=False)["input_ids"]
    runaway = tok(" model = torch.hub.load(x)", add_special_tokens=False)["input_ids"]
    new_task = tok("\n###Instruction: more", add_special_tokens=False)["input_ids"]
    width = max(len(answer) + 3, len(runaway), len(answer) + len(new_task))
    rows = [answer + [eos] + [tok.pad_token_id] * (width - len(answer) - 1),
            (runaway + [tok.pad_token_id] * width)[:width],
            (answer + new_task + [tok.pad_token_id] * width)[:width]]
    lengths, finished, texts = answer_ends(torch.tensor(rows), tok, stop_ids)
    assert lengths[0] == len(answer) + 1 and finished[0] and texts[0] == " <<<domain>>>: vision"
    assert lengths[1] == width and not finished[1]
    # the answer ends at the token completing the stop string "\n###", and its text stops before it
    assert finished[2] and texts[2] == " <<<domain>>>: vision"
    assert "###" in tok.decode(rows[2][:lengths[2]]) and "###" not in tok.decode(rows[2][:lengths[2] - 1])


def _ragged_rollout(model, tok, temperature: float = 0.7, max_new_tokens: int = 10):
    """HF generate() on left-padded prompts of different lengths, with the logits it sampled from."""
    from transformers import GenerationConfig

    ids, mask = left_pad(tok([build_prompt(i) for i in INSTRUCTIONS[:4]])["input_ids"], tok.pad_token_id)
    config = GenerationConfig(do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                              max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id, output_logits=True, return_dict_in_generate=True)
    torch.manual_seed(0)
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    responses = out.sequences[:, ids.shape[1]:]
    return ids, mask, responses, torch.stack(out.logits, 1)


@pytest.mark.parametrize("pack_tokens", [0, 16, 512])
def test_rollout_logprobs_equal_the_sampling_distribution(pack_tokens):
    """The logprobs PPO trains on (one forward over prompt + answer, LM head on answer tokens only,
    padded or packed rows) are those generate() sampled from, so the first PPO ratio is 1."""
    model, tok = tiny_causal_lm()
    ids, mask, responses, gen_logits = _ragged_rollout(model, tok)
    answer_mask = torch.ones_like(responses, dtype=torch.bool)
    answer_mask[1, 6:] = False  # ragged answers: rows ending at different lengths
    answer_mask[2, 3:] = False
    sampled = token_logprobs(gen_logits / 0.7, responses)[answer_mask]
    full = torch.cat([ids, responses], 1)
    attention = torch.cat([mask, answer_mask.long()], 1)
    with torch.no_grad():
        logits, _ = answer_logits(model, forward_inputs(full, attention, ids.shape[1], answer_mask, pack_tokens))
    assert logits.shape == (int(answer_mask.sum()), len(tok))
    assert torch.allclose(token_logprobs(logits / 0.7, responses[answer_mask]), sampled, atol=1e-5)


def test_packing_check_accepts_llama():
    model, _ = tiny_causal_lm()
    assert packing_keeps_sequences_apart(model)


def test_sample_answers_drops_finished_rows_and_samples_from_the_policy():
    """Our decoding loop removes rows from the batch and the KV cache as they end. The log-probs,
    entropies and values it computed while sampling must equal a fresh padded forward over the
    finished answers: a row that read another row's cache, or a wrong position, would not."""
    from transformers import StopStringCriteria

    from rlaif_code.ppo import PolicyWithValue, token_entropy

    model, tok = tiny_causal_lm()
    head = PolicyWithValue(model).value_head
    torch.nn.init.normal_(head.weight)  # a non-trivial value function
    ids, mask = left_pad(tok([build_prompt(i) for i in INSTRUCTIONS])["input_ids"], tok.pad_token_id)
    stop_ids = list(range(3, 103))  # a sixth of the vocabulary ends an answer: rows end at scattered steps
    torch.manual_seed(1)
    rollout = sample_answers(model, ids, mask, 16, 0.9, 1.0, stop_ids, StopStringCriteria(tok, ["\n###"]),
                             tok.pad_token_id, value_head=head)
    responses = rollout.responses
    lengths, finished, _ = answer_ends(responses, tok, stop_ids)
    assert len(set(lengths)) > 2 and any(finished)
    answer_mask = torch.arange(responses.shape[1])[None, :] < torch.tensor(lengths)[:, None]
    assert (responses[~answer_mask] == tok.pad_token_id).all()
    inputs = forward_inputs(torch.cat([ids, responses], 1), torch.cat([mask, answer_mask.long()], 1), ids.shape[1],
                            answer_mask, pack_tokens=0)
    with torch.no_grad():
        logits, hidden = answer_logits(model, inputs)
        values = head(hidden).squeeze(-1)
    logits = logits / 0.9
    assert torch.allclose(token_logprobs(logits, responses[answer_mask]), rollout.logprobs[answer_mask], atol=1e-5)
    assert torch.allclose(token_entropy(logits), rollout.entropy[answer_mask], atol=1e-5)
    assert torch.allclose(values, rollout.values[answer_mask], atol=1e-5)


def test_sample_tokens_draws_from_the_distribution_and_its_nucleus():
    from rlaif_code.ppo import sample_tokens

    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2]]).repeat(20000, 1)
    torch.manual_seed(0)
    counts = torch.bincount(sample_tokens(probs, 1.0), minlength=4).float() / 20000
    assert counts[1] == 0  # a zero-probability token is never drawn
    assert torch.allclose(counts, probs[0], atol=0.015)
    counts = torch.bincount(sample_tokens(probs, 0.75), minlength=4).float() / 20000
    # top_p 0.75 keeps the smallest prefix (by probability) reaching 0.75: tokens 0 and 2, renormalised
    assert counts[1] == 0 and counts[3] == 0
    assert counts[0] == pytest.approx(0.5 / 0.8, abs=0.015)


def test_prompt_indices_cover_each_pass_and_depend_only_on_step():
    seen = [i for step in range(1, 4) for i in prompt_indices(6, 2, step, seed=3)]
    assert sorted(seen) == list(range(6))  # three steps of 2 = one shuffled pass over 6 prompts
    assert prompt_indices(6, 2, 5, seed=3) == prompt_indices(6, 2, 5, seed=3)
    ranks = prompt_indices(6, 3, 1, seed=0, rank=0, world=2) + prompt_indices(6, 3, 1, seed=0, rank=1, world=2)
    assert sorted(ranks) == list(range(6))  # processes share a pass without overlap


# ---------------------------------------------------------------- learning


def test_ppo_learns_a_toy_reward_with_bounded_kl(tmp_path):
    """Reward = number of 'e' in the answer. With kl_coef 0.5 the KL-regularised optimum is
    interior, so the reward must rise while the KL to the reference stays bounded."""
    cfg = tiny_cfg(tmp_path, total_steps=40, batch_size=16, mini_batch_size=8, ppo_epochs=2, max_new_tokens=12,
                   learning_rate=1e-2, kl_coef=0.5, save_every=40)
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


# ---------------------------------------------------------------- CLI, reward model, resume


def save_tiny_reward_model(path: Path, tokenizer=None, seed: int = 1) -> Path:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                         num_labels=1)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_cli_ppo_with_tiny_reward_model(tmp_path):
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
            "--ppo_epochs", "1", "--max_new_tokens", "8", "--missing_eos_penalty", "1.0", "--bf16", "false"]
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


def test_reward_model_with_another_tokenizer_reads_retokenized_text(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(INSTRUCTIONS * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[EOS]", "[UNK]"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    other = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]")
    assert other.get_vocab() != tiny_tokenizer().get_vocab()
    reward = save_tiny_reward_model(tmp_path / "reward", tokenizer=other)
    result = run(tiny_cfg(tmp_path, reward_model=str(reward), total_steps=1))
    assert result["steps"] == 1 and math.isfinite(result["reward_mean_last"])


def _final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out_dir / "model" / "model.safetensors")


def test_resume_continues_from_the_last_checkpoint_and_matches_an_unbroken_run(tmp_path):
    unbroken = run(tiny_cfg(tmp_path, out_dir=str(tmp_path / "a"), total_steps=4, save_every=2), reward_fn=count_e)
    assert unbroken["resumed_from_step"] == 0

    first = run(tiny_cfg(tmp_path, out_dir=str(tmp_path / "b"), total_steps=2, save_every=2), reward_fn=count_e)
    assert first["steps"] == 2
    resumed = run(tiny_cfg(tmp_path, out_dir=str(tmp_path / "b"), total_steps=4, save_every=2), reward_fn=count_e)
    assert resumed["resumed_from_step"] == 2
    assert [r["step"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl")] == [1, 2, 3, 4]
    a, b = _final_weights(tmp_path / "a"), _final_weights(tmp_path / "b")
    assert all(torch.equal(a[name], b[name]) for name in a)  # nothing lost, nothing redone differently
    with pytest.raises(InputError, match="past total_steps=3"):
        run(tiny_cfg(tmp_path, out_dir=str(tmp_path / "b"), total_steps=3, save_every=2), reward_fn=count_e)


def test_killed_run_resumes_after_its_last_checkpoint(tmp_path):
    calls = {"n": 0}

    def dies_at_step_3(prompts, answers):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return count_e(prompts, answers)

    cfg = tiny_cfg(tmp_path, total_steps=4, save_every=2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, reward_fn=dies_at_step_3)
    out = Path(cfg.out_dir)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]
    assert not (out / "stage.json").exists()
    result = run(cfg, reward_fn=count_e)
    assert result["resumed_from_step"] == 2
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4]
    assert json.loads((out / "checkpoints" / "step-000004" / "checkpoint.json").read_text())["step"] == 4


def test_lora_uses_the_adapter_free_network_as_reference_and_saves_merged(tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = tiny_cfg(tmp_path, total_steps=1, lora=PPOLoraSettings(enabled=True, r=4, alpha=8,
                                                                   target_modules=["q_proj", "v_proj"]))
    run(cfg, reward_fn=count_e)
    row = read_jsonl(Path(cfg.out_dir) / "metrics.jsonl")[0]
    assert abs(row["kl"]) < 1e-5  # LoRA's B starts at zero: policy == reference at step 1
    saved = _final_weights(Path(cfg.out_dir))
    assert not any("lora" in name for name in saved)
    AutoModelForCausalLM.from_pretrained(Path(cfg.out_dir) / "model")


def test_separate_value_model_recomputed_logprobs_and_adaptive_kl_run(tmp_path):
    cfg = tiny_cfg(tmp_path, total_steps=2, value_head="separate", kl_mode="adaptive", kl_target=0.01,
                   kl_horizon=4, grad_accum=2, mini_batch_size=4, whiten_rewards=True, rollout_logprobs="recompute")
    result = run(cfg, reward_fn=count_e)
    rows = read_jsonl(Path(cfg.out_dir) / "metrics.jsonl")
    assert rows[1]["kl_coef"] != rows[0]["kl_coef"]
    assert result["kl_coef"] != cfg.kl_coef


def test_bad_inputs_are_refused(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="no prompts"):
        run(tiny_cfg(tmp_path, prompts_file=str(empty)), reward_fn=count_e)
    no_prompt = tmp_path / "bad.jsonl"
    no_prompt.write_text(json.dumps({"instruction": "x"}) + "\n")
    with pytest.raises(InputError, match="bad.jsonl:1"):
        run(tiny_cfg(tmp_path, prompts_file=str(no_prompt)), reward_fn=count_e)
    with pytest.raises(ConfigError, match="mini_batch_size"):
        run(tiny_cfg(tmp_path, batch_size=5, mini_batch_size=2), reward_fn=count_e)


def test_ppo_accepts_a_precision_other_than_an_earlier_stages_in_the_same_process():
    # Seen on an H100: SFT's Trainer (bf16) left the process-wide AcceleratorState set, and PPO with
    # bf16 off then failed. On CPU, accelerate's bf16 state reproduces it.
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)  # whatever an earlier test left
    Accelerator(mixed_precision="bf16")
    try:
        accelerator = ppo._accelerator(1, "no")
        assert accelerator.mixed_precision == "no"
        assert ppo._accelerator(1, "no").mixed_precision == "no"  # same precision: state kept, no error
    finally:
        AcceleratorState._reset_state(reset_partial_state=False)


def test_incomplete_answers_are_those_missing_a_field():
    full = ("<<<domain>>>: Classification\n<<<api_call>>>: torch.hub.load('pytorch/vision', 'vgg11')\n"
            "<<<api_provider>>>: PyTorch\n<<<explanation>>>: Load VGG-11.\n<<<code>>>: import torch")
    no_code = full.split("\n<<<code>>>")[0]
    empty_code = no_code + "\n<<<code>>>: "
    assert ppo.incomplete_answers([full, no_code, empty_code, ""]) == [False, True, True, True]


def test_incomplete_answer_penalty_lowers_what_ppo_optimises(tmp_path):
    # A random tiny model writes no Gorilla fields at all: every answer is incomplete.
    def zero(prompts, answers):
        return torch.zeros(len(answers))

    run(tiny_cfg(tmp_path, total_steps=1, incomplete_answer_penalty=2.0), reward_fn=zero)
    row = read_jsonl(tmp_path / "ppo" / "metrics.jsonl")[0]
    assert row["incomplete_fraction"] == 1.0
    assert row["reward_mean"] == 0.0 and row["penalized_reward_mean"] == -2.0
