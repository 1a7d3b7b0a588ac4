"""Generation of Gorilla answers from prompt texts, through the decoding loop of `decoding` (the
one PPO's rollouts use too): `generate_stream` for many prompts (rows in flight, waiting prompts
joining as rows end), `generate_batch` for one batch. `generate_batch_hf` is the earlier path,
transformers' `generate`, kept for benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

from rlaif_code.core.models import cut_at_stop
from rlaif_code.sample.decoding import LogitsHook, Sampling, decode_stream
from rlaif_code.sample.sampling import row_seed
from rlaif_code.sample.stops import answer_ends_for


@dataclass
class Generation:
    text: str  # completion only, cut before any stop string
    n_tokens: int  # tokens the model generated (up to and including a stop token)
    finished: bool  # reached eos or a stop string before max_new_tokens


def prompt_tokens(tokenizer: Any, prompts: list[str], max_prompt_tokens: int | None) -> list[list[int]]:
    """Each prompt's ids; one over `max_prompt_tokens` loses its start (the end holds "###Output:")."""
    tokenizer.truncation_side = "left"
    return tokenizer(prompts, truncation=max_prompt_tokens is not None, max_length=max_prompt_tokens,
                     add_special_tokens=True)["input_ids"]


@torch.inference_mode()  # as a decorator, the mode is left around each yield (a `with` would leak to the caller)
def generate_stream(model: Any, tokenizer: Any, prompts: list[str], *, batch_size: int, max_new_tokens: int,
                    temperature: float = 0.0, top_p: float = 1.0, max_prompt_tokens: int | None = None,
                    seeds: list[int] | None = None, min_new_tokens: int = 0,
                    adjust_logits: LogitsHook | None = None) -> Iterator[tuple[int, Generation]]:
    """(prompt index, answer) as each answer ends, with up to `batch_size` answers in flight.

    With temperature > 0, `seeds` (one per prompt, e.g. `row_seed(seed, example_id, sample_id)`)
    decide the draws; without them a prompt is seeded by its index. Prompts join in the order
    given: sorted by length, batches need little padding.
    """
    if temperature > 0 and seeds is None:
        seeds = [row_seed(i) for i in range(len(prompts))]
    sampling = Sampling(max_new_tokens, temperature, top_p, seeds, tokenizer.pad_token_id, min_new_tokens)
    ids = prompt_tokens(tokenizer, prompts, max_prompt_tokens)
    for row, tokens, ended in decode_stream(model, ids, answer_ends_for(tokenizer), sampling, batch_size,
                                            adjust_logits):
        text = cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True))[0]
        yield row, Generation(text=text, n_tokens=len(tokens), finished=ended)


def generate_batch(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int, temperature: float = 0.0,
                   top_p: float = 1.0, max_prompt_tokens: int | None = None, seeds: list[int] | None = None,
                   min_new_tokens: int = 0, adjust_logits: LogitsHook | None = None) -> list[Generation]:
    """One answer per prompt, all in one batch, each ending at the end of a Gorilla answer."""
    answers: list[Generation | None] = [None] * len(prompts)
    for row, generation in generate_stream(model, tokenizer, prompts, batch_size=len(prompts),
                                           max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                           max_prompt_tokens=max_prompt_tokens, seeds=seeds,
                                           min_new_tokens=min_new_tokens, adjust_logits=adjust_logits):
        answers[row] = generation
    return answers  # type: ignore[return-value]


def generate_batch_hf(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int,
                      temperature: float = 0.0, top_p: float = 1.0, max_prompt_tokens: int | None = None,
                      **generate_kwargs: Any) -> list[Generation]:
    """The earlier path: transformers' `generate` with its stop-string criteria (for benchmarks)."""
    from rlaif_code.core.models import generation_stop_kwargs, stop_token_ids

    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, truncation=max_prompt_tokens is not None,
                    max_length=max_prompt_tokens, add_special_tokens=True)
    enc = {k: v.to(model.device) for k, v in enc.items()}
    sampling = temperature > 0
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": sampling, "use_cache": True,
                              **generation_stop_kwargs(tokenizer)}
    if sampling:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:  # unset the sampling knobs a saved generation_config may carry, so greedy stays greedy
        kwargs.update(temperature=None, top_p=None, top_k=None)
    kwargs.update(generate_kwargs)
    with torch.inference_mode():
        output = model.generate(**enc, **kwargs)
    stops = set(stop_token_ids(tokenizer))
    results = []
    for new in output[:, enc["input_ids"].shape[1]:].tolist():
        n_tokens, hit_stop_token = len(new), False
        for position, token in enumerate(new):
            if token in stops:
                n_tokens, hit_stop_token = position + 1, True
                break
        else:  # rows that ended by a stop string are padded after it
            while n_tokens and new[n_tokens - 1] == tokenizer.pad_token_id:
                n_tokens -= 1
        text, hit_stop_string = cut_at_stop(tokenizer.decode(new[:n_tokens], skip_special_tokens=True))
        results.append(Generation(text=text, n_tokens=n_tokens, finished=hit_stop_token or hit_stop_string))
    return results
