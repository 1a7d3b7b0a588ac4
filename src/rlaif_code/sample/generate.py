"""Batched generation of Gorilla answers with a loaded model: left padding, KV cache, and the
end of an answer (eos, another end-of-text token, or a stop string) per row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Generation:
    text: str  # completion only, cut before any stop string
    n_tokens: int  # tokens the model generated (up to and including a stop token)
    finished: bool  # reached eos or a stop string before max_new_tokens


def generate_batch(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int,
                   temperature: float = 0.0, top_p: float = 1.0, max_prompt_tokens: int | None = None,
                   **generate_kwargs: Any) -> list[Generation]:
    """Generate one answer per prompt, stopping at the end of a Gorilla answer."""
    import torch

    from rlaif_code.core.models import cut_at_stop, generation_stop_kwargs, stop_token_ids

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
    new_tokens = output[:, enc["input_ids"].shape[1]:].tolist()
    stops = set(stop_token_ids(tokenizer))
    results = []
    for ids in new_tokens:
        n_tokens, hit_stop_token = len(ids), False
        for position, token in enumerate(ids):
            if token in stops:
                n_tokens, hit_stop_token = position + 1, True
                break
        else:  # rows that ended by a stop string are padded after it
            while n_tokens and ids[n_tokens - 1] == tokenizer.pad_token_id:
                n_tokens -= 1
        text = tokenizer.decode(ids[:n_tokens], skip_special_tokens=True)
        text, hit_stop_string = cut_at_stop(text)
        results.append(Generation(text=text, n_tokens=n_tokens, finished=hit_stop_token or hit_stop_string))
    return results
