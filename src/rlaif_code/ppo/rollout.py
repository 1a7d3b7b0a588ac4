"""The sampler and what it needs: prompts, the order they are drawn in, and where each answer ends.

`sample_answers` decodes with a KV cache from left-padded prompts and drops each row from the
batch (and the cache) as it ends; each step's logits and last hidden state give the token's
log-prob, entropy and (shared-head) value, so a rollout needs no second pass of the policy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from rlaif_code.core.artifacts import InputError, iter_jsonl
from rlaif_code.ppo.config import PPOConfig
from rlaif_code.ppo.layout import causal_lm_parts, position_ids_for


def load_prompts(cfg: PPOConfig) -> list[str]:
    """The `prompt` field of each line of `prompts_file`, else of the data stage's train.jsonl."""
    path = Path(cfg.prompts_file) if cfg.prompts_file else Path(cfg.data_dir) / "train.jsonl"
    if not path.is_file():
        raise InputError(f"prompts not found: {path} (run the data stage, or set prompts_file)")
    prompts = []
    for lineno, row in iter_jsonl(path):
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"{path}:{lineno}: missing or empty 'prompt' field")
        prompts.append(prompt)
    if not prompts:
        raise InputError(f"{path}: no prompts: PPO needs at least one")
    return prompts


@lru_cache(maxsize=8)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return tuple(order)


@dataclass
class Prompts:
    texts: list[str]
    ids: list[list[int]]  # each text tokenized, special tokens added
    too_long: int  # prompts left out for having more than max_prompt_tokens tokens


def encode_prompts(texts: list[str], tokenizer: Any, max_prompt_tokens: int) -> Prompts:
    """Tokenize every prompt once, leaving out those over `max_prompt_tokens` (and counting them)."""
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    keep = [i for i, ids in enumerate(encoded) if 0 < len(ids) <= max_prompt_tokens]
    if not keep:
        raise InputError(f"no prompt fits max_prompt_tokens={max_prompt_tokens} "
                         f"(shortest has {min(len(e) for e in encoded)} tokens)")
    return Prompts([texts[i] for i in keep], [encoded[i] for i in keep], len(encoded) - len(keep))


def prompt_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """The prompts of `step` (1-based) for process `rank`: a seeded shuffle per pass over the data.

    A pure function of (seed, step), so a resumed run samples exactly what an unbroken one would.
    """
    start = (step - 1) * batch_size * world + rank * batch_size
    return [_epoch_order(n, seed, k // n)[k % n] for k in range(start, start + batch_size)]


def sample_tokens(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """One token per row from `probs` (b, V), nucleus-truncated when top_p < 1."""
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest prefix reaching top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    # Inverse CDF rather than torch.multinomial, which on CPU costs ~15x more over a 49k vocabulary
    # (a noticeable share of a decoding step). The first index whose CDF exceeds u: a token of
    # probability 0 owns an empty interval and is never drawn.
    cdf = probs.double().cumsum(-1)  # (b, V)
    u = torch.rand((probs.shape[0], 1), device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=probs.shape[-1] - 1)


@dataclass
class Rollout:
    responses: torch.Tensor  # (B, T) sampled tokens, pad after each row's end
    logprobs: torch.Tensor  # (B, T) log-prob of each token under softmax(logits / temperature)
    entropy: torch.Tensor  # (B, T) entropy of that distribution
    values: torch.Tensor | None  # (B, T) value head on the state before each token (when given a head)


@torch.no_grad()
def sample_answers(policy: nn.Module, queries: torch.Tensor, query_mask: torch.Tensor, max_new_tokens: int,
                   temperature: float, top_p: float, stop_ids: list[int], stopping: Any, pad_id: int,
                   value_head: nn.Module | None = None) -> Rollout:
    """Sample answers with a KV cache from left-padded prompts; T = steps until every row ended.

    A row leaves the batch (and the cache) as soon as it emits an end token or completes a stop
    string. Each step's logits and last hidden state give the token's log-prob, the entropy and
    (with `value_head`) the value, so a rollout needs no second pass of the policy.
    """
    batch, device = queries.shape[0], queries.device
    backbone, lm_head = causal_lm_parts(policy)
    out = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logprobs, entropy, values = (torch.zeros((batch, max_new_tokens), device=device) for _ in range(3))
    stop = torch.tensor(stop_ids, device=device)
    active = torch.arange(batch, device=device)  # rows still generating
    attention = query_mask
    step_ids, step_positions = queries, position_ids_for(query_mask)
    next_position = query_mask.sum(1)  # (b,)
    cache = None
    for t in range(max_new_tokens):
        output = backbone(input_ids=step_ids, attention_mask=attention, position_ids=step_positions,
                          past_key_values=cache, use_cache=True)
        cache = output.past_key_values
        hidden = output.last_hidden_state[:, -1]  # (b, H): the state before token t
        log_probs = torch.log_softmax(lm_head(hidden).float() / temperature, dim=-1)  # (b, V)
        probs = log_probs.exp()
        tokens = sample_tokens(probs, top_p)  # (b,)
        out[active, t] = tokens
        logprobs[active, t] = log_probs.gather(-1, tokens[:, None]).squeeze(1)
        entropy[active, t] = -(probs * log_probs).sum(-1)
        if value_head is not None:
            values[active, t] = value_head(hidden).squeeze(-1).float()
        # stop strings are looked for in the answer only (the prompt holds "###Instruction" itself)
        ended = torch.isin(tokens, stop) | stopping(out[active, : t + 1], None).to(device)
        if t + 1 == max_new_tokens or bool(ended.all()):
            break
        if bool(ended.any()):
            keep = (~ended).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, tokens, attention, next_position = active[keep], tokens[keep], attention[keep], next_position[keep]
        attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], 1)
        step_ids, step_positions = tokens[:, None], next_position[:, None]
        next_position = next_position + 1
    width = t + 1
    return Rollout(out[:, :width], logprobs[:, :width], entropy[:, :width],
                   values[:, :width] if value_head is not None else None)



def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids, mask


def answer_ends(responses: torch.Tensor, tokenizer: Any,
                stop_ids: list[int]) -> tuple[list[int], list[bool], list[str]]:
    """For each generated row: (tokens that belong to the answer, whether it ended, the answer text).

    An answer ends at its first end token (which stays in the answer: emitting it was the
    policy's last action) or at the token that completes a stop string ("###Instruction"),
    whichever comes first. The text excludes both.
    """
    from rlaif_code.core.models import cut_at_stop

    lengths, finished, texts = [], [], []
    stop_set = set(stop_ids)
    for row in responses.tolist():
        end = next((i + 1 for i, tok in enumerate(row) if tok in stop_set), None)
        ended = end is not None
        end = end if end is not None else len(row)
        text, found = cut_at_stop(tokenizer.decode(row[:end], skip_special_tokens=True))
        if found:  # the shortest prefix whose text already holds a stop string
            low, high = 1, end
            while low < high:
                mid = (low + high) // 2
                if cut_at_stop(tokenizer.decode(row[:mid], skip_special_tokens=True))[1]:
                    high = mid
                else:
                    low = mid + 1
            end, ended = low, True
        lengths.append(max(end, 1))
        finished.append(ended)
        texts.append(text)
    return lengths, finished, texts



def incomplete_answers(answers: list[str]) -> list[bool]:
    """True where an answer lacks one of the five output fields (or leaves it empty)."""
    from rlaif_code.data.parse import FIELDS, parse_output

    return [any(not parse_output(answer).fields[name].strip() for name in FIELDS) for answer in answers]
