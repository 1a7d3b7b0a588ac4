"""The decoding loop: greedy as transformers' generate, seeded sampling whatever the batch, where
answers end, rows leaving the batch, and the nucleus draw."""

from __future__ import annotations

import random

import pytest
import torch

from rlaif_code.core.models import cut_at_stop
from rlaif_code.data.prompts import build_prompt
from rlaif_code.sample.decoding import Sampling, decode, decode_stream, left_pad
from rlaif_code.sample.generate import generate_batch
from rlaif_code.sample.sampling import draw_tokens, row_seed
from rlaif_code.sample.stops import AnswerEnds
from tiny import tiny_causal_lm, tiny_tokenizer

INSTRUCTIONS = ["Load a pretrained image classifier", "Segment the objects in a street photo",
                "Detect faces in a video frame", "Translate English text to French",
                "Classify the sound in an audio clip", "Estimate depth from a single image",
                "Find me a model", "Recognise handwritten digits in scanned forms from a bank"]
# A sixth of the tiny vocabulary ends an answer, so rows end at scattered steps.
MANY_END_IDS = list(range(3, 103))


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see tests/conftest.py)."""


@pytest.fixture(scope="module")
def model_and_tokenizer():
    """The tiny model with large random weights: its greedy answers vary with the prompt (at the
    usual init they repeat one token)."""
    model, tok = tiny_causal_lm()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in (p for p in model.parameters() if p.dim() == 2):
            weight.normal_(0.0, 0.3, generator=generator)
    return model.eval(), tok


def _prompts(tok, instructions=INSTRUCTIONS):
    return left_pad(tok([build_prompt(i) for i in instructions])["input_ids"], tok.pad_token_id)


def _answers(decoded) -> list[list[int]]:
    return [decoded.tokens[row, :length].tolist() for row, length in enumerate(decoded.lengths)]


def test_greedy_equals_transformers_generate(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids, mask = _prompts(tok)
    ours = decode(model, ids, mask, AnswerEnds(tok, end_ids=MANY_END_IDS), Sampling(24, 0.0, pad_id=tok.pad_token_id))
    with torch.no_grad():
        theirs = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=24,
                                eos_token_id=MANY_END_IDS, pad_token_id=tok.pad_token_id, temperature=None,
                                top_p=None, top_k=None)[:, ids.shape[1]:]
    assert len(set(ours.lengths)) > 2  # rows did end at different steps
    assert torch.equal(ours.tokens, theirs)


def test_seeded_answers_do_not_depend_on_the_batch(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ends = AnswerEnds(tok, end_ids=MANY_END_IDS)
    seeds = [row_seed(0, i, 0) for i in range(len(INSTRUCTIONS))]

    def in_batches(size: int) -> list[list[int]]:
        answers = []
        for start in range(0, len(INSTRUCTIONS), size):
            ids, mask = _prompts(tok, INSTRUCTIONS[start:start + size])
            sampling = Sampling(20, 0.9, 0.95, seeds[start:start + size], tok.pad_token_id)
            answers += _answers(decode(model, ids, mask, ends, sampling))
        return answers

    one = in_batches(1)
    assert len({len(a) for a in one}) > 2
    assert in_batches(3) == one
    assert in_batches(16) == one
    ids, mask = _prompts(tok)
    other_seeds = decode(model, ids, mask, ends, Sampling(20, 0.9, 0.95, [s + 1 for s in seeds], tok.pad_token_id))
    assert _answers(other_seeds) != one


def test_rows_leave_the_batch_as_they_end(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids, mask = _prompts(tok)
    forward_rows: list[int] = []
    handle = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: forward_rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    running: list[int] = []
    try:
        decoded = decode(model, ids, mask, AnswerEnds(tok, end_ids=MANY_END_IDS),
                         Sampling(24, 0.9, seeds=list(range(len(INSTRUCTIONS))), pad_id=tok.pad_token_id),
                         on_step=lambda step: running.append(step.rows.shape[0]))
    finally:
        handle.remove()
    lengths = decoded.lengths
    # the prompt pass, then one pass per later token, over the rows whose answers go on
    assert forward_rows == [len(lengths)] + [sum(n > k for n in lengths) for k in range(1, max(lengths))]
    assert running == [sum(n > k for n in lengths) for k in range(max(lengths))]
    assert forward_rows[-1] < len(lengths)


@pytest.mark.parametrize("drop_columns_at", [32, 3])
def test_waiting_prompts_join_as_rows_end_and_answers_stay_the_same(model_and_tokenizer, monkeypatch,
                                                                    drop_columns_at):
    """With fewer slots than prompts, prompts join the running rows mid-way (their prompts end at
    the current column, among longer histories), and columns no running row needs are dropped:
    each answer is what it is in a batch of its own."""
    from rlaif_code.sample import decoding

    monkeypatch.setattr(decoding, "DROP_COLUMNS_AT", drop_columns_at)
    dropped: list[int] = []
    real_drop = decoding.SlotCache.drop_columns
    monkeypatch.setattr(decoding.SlotCache, "drop_columns",
                        lambda cache, running, count: dropped.append(count) or real_drop(cache, running, count))
    model, tok = model_and_tokenizer
    prompts = [tok(build_prompt(i))["input_ids"] for i in INSTRUCTIONS * 3]
    seeds = [row_seed(1, i) for i in range(len(prompts))]
    ends = AnswerEnds(tok, end_ids=MANY_END_IDS[:40])
    alone = [_answers(decode(model, *left_pad([p], tok.pad_token_id), ends,
                             Sampling(30, 0.9, 0.95, [seed], tok.pad_token_id)))[0]
             for p, seed in zip(prompts, seeds)]
    assert len({len(a) for a in alone}) > 5
    for slots in (3, 8):
        streamed = {row: (tokens, ended) for row, tokens, ended in decode_stream(
            model, prompts, ends, Sampling(30, 0.9, 0.95, seeds, tok.pad_token_id), slots)}
        assert [streamed[row][0] for row in range(len(prompts))] == alone
        assert [streamed[row][1] for row in range(len(prompts))] == [len(a) < 30 or a[-1] in ends.end_ids
                                                                     for a in alone]
    assert (len(dropped) > 5) == (drop_columns_at == 3)


def _stop_pieces(tok) -> list[list[int]]:
    texts = ["###Instruction", "###Instruction:", "\n###", "\n", "#", "##", "###", " #", "# ", "Instruction",
             "Inst", "ruction", "ion", " model", " = ", "torch.hub.load(", "'pytorch/vision'", ")", " # load it",
             "<<<code>>>:", "###Output", " ###", "\n\n"]
    return [tok(text, add_special_tokens=False)["input_ids"] for text in texts]


def test_stops_end_answers_exactly_where_cut_at_stop_finds_them():
    """Token sequences built from pieces (so "###" comes in many tokenizations): the tracker ends
    each at the first prefix whose text holds a stop string, the first end token, or nowhere."""
    tok = tiny_tokenizer()
    ends = AnswerEnds(tok, end_ids=[tok.eos_token_id])
    pieces = _stop_pieces(tok) + [[tok.eos_token_id]]
    rng = random.Random(0)
    sequences = [sum((rng.choice(pieces) for _ in range(rng.randint(1, 14))), []) for _ in range(300)]
    width = max(map(len, sequences))
    answers = torch.full((len(sequences), width), tok.pad_token_id)
    tracker = ends.tracker(len(sequences), len(tok), "cpu")
    found: list[int | None] = [None] * len(sequences)
    for step in range(width):
        rows = torch.tensor([r for r, seq in enumerate(sequences) if found[r] is None and step < len(seq)])
        if rows.numel() == 0:
            break
        tokens = torch.tensor([sequences[r][step] for r in rows.tolist()])
        answers[rows, step] = tokens
        steps = torch.full_like(rows, step)
        for row, ended in zip(rows.tolist(), tracker.ended(answers, rows, steps, tokens).tolist()):
            if ended:
                found[row] = step + 1
    assert found == [ends.first_stop(seq) for seq in sequences]
    for seq, length in zip(sequences, found):
        if length is not None and seq[length - 1] != tok.eos_token_id:  # ended by a stop string
            assert cut_at_stop(ends.text(seq[:length]))[1] and not cut_at_stop(ends.text(seq[:length - 1]))[1]
    assert sum(n is not None for n in found) > 100 and sum(n is None for n in found) > 10


def test_generated_answers_stop_at_a_new_instruction_or_eos(model_and_tokenizer):
    """A random tiny model never writes '###Instruction' by itself: the logits are rigged to write
    each row's script, and the answers must stop where the script starts a new task."""
    model, tok = model_and_tokenizer
    encode = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    answer = " <<<api_call>>>: torch.hub.load('pytorch/vision', 'resnet50')"
    filler = encode(" model")[0]
    scripts = [encode(answer + "\n###Instruction: and now something else entirely"),
               encode(answer) + [tok.eos_token_id] + encode(" trailing"),
               encode(answer + " model" * 40)]

    def scripted(rows, steps, logits, answers):
        forced = torch.full_like(logits, float("-inf"))
        for slot, (row, t) in enumerate(zip(rows.tolist(), steps.tolist())):
            forced[slot, scripts[row][t] if t < len(scripts[row]) else filler] = 0.0
        return forced

    prompts = [build_prompt(i) for i in INSTRUCTIONS[:3]]
    by_instruction, by_eos, unfinished = generate_batch(model, tok, prompts, max_new_tokens=40, temperature=0.0,
                                                        adjust_logits=scripted)
    assert by_instruction.text == answer and by_instruction.finished
    assert by_instruction.n_tokens == len(encode(answer + "\n###"))  # the token completing "\n###" ends it
    assert by_eos.text == answer and by_eos.finished
    assert by_eos.n_tokens == len(encode(answer)) + 1  # the eos counts: the model chose to stop
    assert not unfinished.finished and unfinished.n_tokens == 40


def _reference_draw(probs: torch.Tensor, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
    """The nucleus by a full sort, then the inverse CDF over the whole vocabulary (the earlier sampler)."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(-1) - sorted_probs > top_p
    probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    cdf = probs.double().cumsum(-1)
    return torch.searchsorted(cdf, uniforms[:, None] * cdf[:, -1:], right=True).squeeze(1)


def test_nucleus_draw_equals_a_full_sort_however_wide_the_nucleus():
    torch.manual_seed(0)
    # peaked rows (nucleus of a few tokens) to nearly flat ones (thousands of tokens)
    logits = torch.randn(48, 5000) * torch.linspace(0.05, 8.0, 48)[:, None]
    probs = torch.softmax(logits, -1)
    uniforms = torch.rand(48, dtype=torch.float64)
    for top_p in (0.5, 0.95, 1.0):
        assert torch.equal(draw_tokens(probs, top_p, uniforms), _reference_draw(probs, top_p, uniforms))


def test_draws_follow_the_distribution_and_its_nucleus():
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2]]).repeat(20000, 1)
    uniforms = torch.rand(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(draw_tokens(probs, 1.0, uniforms), minlength=4).float() / 20000
    assert counts[1] == 0  # a zero-probability token is never drawn
    assert torch.allclose(counts, probs[0], atol=0.015)
    counts = torch.bincount(draw_tokens(probs, 0.75, uniforms), minlength=4).float() / 20000
    # top_p 0.75 keeps the smallest prefix (by probability) reaching 0.75: tokens 0 and 2, renormalised
    assert counts[1] == 0 and counts[3] == 0
    assert counts[0] == pytest.approx(0.5 / 0.8, abs=0.015)


def test_end_tokens_wait_for_min_new_tokens(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids, mask = _prompts(tok)
    ends = AnswerEnds(tok, end_ids=MANY_END_IDS)
    free = decode(model, ids, mask, ends, Sampling(24, 0.9, seeds=list(range(len(INSTRUCTIONS)))))
    held = decode(model, ids, mask, ends, Sampling(24, 0.9, seeds=list(range(len(INSTRUCTIONS))), min_new_tokens=6))
    assert min(free.lengths) < 6 and min(held.lengths) >= 7
    assert not any(token in MANY_END_IDS for answer in _answers(held) for token in answer[:6])
