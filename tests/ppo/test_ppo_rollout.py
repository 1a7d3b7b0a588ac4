"""The sampler: where answers end, decoding with rows leaving the batch, token draws, prompt order."""

from __future__ import annotations

import torch

from rlaif_code.data.prompts import build_prompt
from rlaif_code.ppo.layout import PolicyWithValue, answer_logits, forward_inputs
from rlaif_code.ppo.losses import token_entropy, token_logprobs
from rlaif_code.ppo.rollout import (
    Rollout,
    answer_texts,
    incomplete_answers,
    left_pad,
    prompt_indices,
    rollout_seeds,
    sample_answers,
)
from rlaif_code.sample.stops import AnswerEnds
from tiny import tiny_causal_lm, tiny_tokenizer


def test_rollout_ends_at_end_token_or_stop_string_and_its_text_stops_before():
    """The decoder's ends are the rollout's: a row ends at its end token (kept among its tokens) or
    at the token completing a stop string, whose text is left out of the answer."""
    tok = tiny_tokenizer()
    eos = tok.eos_token_id
    answer = tok(" <<<domain>>>: vision", add_special_tokens=False)["input_ids"]
    new_task = tok("\n###Instruction: more", add_special_tokens=False)["input_ids"]
    ends = AnswerEnds(tok, end_ids=[eos])
    rows = [answer + [eos, 7, 7], answer + new_task, answer + [7, 7, 7]]
    width = max(map(len, rows))
    responses = torch.tensor([(r + [tok.pad_token_id] * width)[:width] for r in rows])
    lengths = [len(answer) + 1, ends.first_stop(rows[1]), len(rows[2])]
    rollout = Rollout(responses, *(torch.zeros(3, width) for _ in range(2)), None, lengths, [True, True, False])
    texts = answer_texts(rollout, tok)
    assert texts[0] == " <<<domain>>>: vision" and texts[1] == " <<<domain>>>: vision"
    assert "###" in tok.decode(rows[1][:lengths[1]]) and "###" not in tok.decode(rows[1][:lengths[1] - 1])
    assert texts[2] == tok.decode(rows[2], skip_special_tokens=True)


def test_sample_answers_drops_finished_rows_and_samples_from_the_policy(instructions):
    """The decoding loop removes rows from the batch and the KV cache as they end. The log-probs,
    entropies and values it computed while sampling must equal a fresh padded forward over the
    finished answers: a row that read another row's cache, or a wrong position, would not."""
    model, tok = tiny_causal_lm()
    head = PolicyWithValue(model).value_head
    torch.nn.init.normal_(head.weight)  # a non-trivial value function
    ids, mask = left_pad(tok([build_prompt(i) for i in instructions])["input_ids"], tok.pad_token_id)
    stop_ids = list(range(3, 103))  # a sixth of the vocabulary ends an answer: rows end at scattered steps
    rollout = sample_answers(model, ids, mask, 16, 0.9, 1.0, AnswerEnds(tok, end_ids=stop_ids), tok.pad_token_id,
                             rollout_seeds(0, 1, len(instructions)), value_head=head)
    responses = rollout.responses
    lengths, finished = rollout.lengths, rollout.ended
    assert len(set(lengths)) > 2 and any(finished)
    assert all(responses[row, length - 1] in stop_ids for row, length in enumerate(lengths) if finished[row])
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


def test_rollouts_do_not_depend_on_how_the_step_is_split_between_processes(instructions):
    """Seeds are keyed by the prompt's place among the step's prompts of all processes: two
    processes with half the batch each sample what one process with the whole batch samples."""
    assert rollout_seeds(0, 3, 2, rank=0) + rollout_seeds(0, 3, 2, rank=1) == rollout_seeds(0, 3, 4)
    assert rollout_seeds(0, 3, 4) != rollout_seeds(0, 4, 4) != rollout_seeds(1, 3, 4)
    model, tok = tiny_causal_lm()
    prompts = tok([build_prompt(i) for i in instructions[:4]])["input_ids"]
    ends = AnswerEnds(tok, end_ids=list(range(3, 103)))

    def rollout(rows: slice, rank: int, batch_size: int):
        ids, mask = left_pad(prompts[rows], tok.pad_token_id)
        return sample_answers(model, ids, mask, 12, 0.9, 0.95, ends, tok.pad_token_id,
                              rollout_seeds(0, 1, batch_size, rank))

    whole, first, second = rollout(slice(0, 4), 0, 4), rollout(slice(0, 2), 0, 2), rollout(slice(2, 4), 1, 2)
    for part, rows in ((first, slice(0, 2)), (second, slice(2, 4))):
        width = part.responses.shape[1]
        assert torch.equal(part.responses, whole.responses[rows, :width])
        assert (whole.responses[rows, width:] == tok.pad_token_id).all()
        assert torch.allclose(part.logprobs, whole.logprobs[rows, :width], atol=1e-6)


def test_prompt_indices_cover_each_pass_and_depend_only_on_step():
    seen = [i for step in range(1, 4) for i in prompt_indices(6, 2, step, seed=3)]
    assert sorted(seen) == list(range(6))  # three steps of 2 = one shuffled pass over 6 prompts
    assert prompt_indices(6, 2, 5, seed=3) == prompt_indices(6, 2, 5, seed=3)
    ranks = prompt_indices(6, 3, 1, seed=0, rank=0, world=2) + prompt_indices(6, 3, 1, seed=0, rank=1, world=2)
    assert sorted(ranks) == list(range(6))  # processes share a pass without overlap


def test_incomplete_answers_are_those_missing_a_field():
    full = ("<<<domain>>>: Classification\n<<<api_call>>>: torch.hub.load('pytorch/vision', 'vgg11')\n"
            "<<<api_provider>>>: PyTorch\n<<<explanation>>>: Load VGG-11.\n<<<code>>>: import torch")
    no_code = full.split("\n<<<code>>>")[0]
    empty_code = no_code + "\n<<<code>>>: "
    assert incomplete_answers([full, no_code, empty_code, ""]) == [False, True, True, True]
