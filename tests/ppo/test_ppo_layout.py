"""Forward layout: padded and packed rows give the log-probs the sampler drew from."""

from __future__ import annotations

import pytest
import torch

from rlaif_code.data.prompts import build_prompt
from rlaif_code.ppo.layout import answer_logits, forward_inputs, packing_keeps_sequences_apart
from rlaif_code.ppo.losses import token_logprobs
from rlaif_code.ppo.rollout import left_pad
from tiny import tiny_causal_lm


def _ragged_rollout(model, tok, instructions, temperature: float = 0.7, max_new_tokens: int = 10):
    """HF generate() on left-padded prompts of different lengths, with the logits it sampled from."""
    from transformers import GenerationConfig

    ids, mask = left_pad(tok([build_prompt(i) for i in instructions[:4]])["input_ids"], tok.pad_token_id)
    config = GenerationConfig(do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                              max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id, output_logits=True, return_dict_in_generate=True)
    torch.manual_seed(0)
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    responses = out.sequences[:, ids.shape[1]:]
    return ids, mask, responses, torch.stack(out.logits, 1)


@pytest.mark.parametrize("pack_tokens", [0, 16, 512])
def test_rollout_logprobs_equal_the_sampling_distribution(pack_tokens, instructions):
    """The logprobs PPO trains on (one forward over prompt + answer, LM head on answer tokens only,
    padded or packed rows) are those generate() sampled from, so the first PPO ratio is 1."""
    model, tok = tiny_causal_lm()
    ids, mask, responses, gen_logits = _ragged_rollout(model, tok, instructions)
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
