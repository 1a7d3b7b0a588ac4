"""The sampler and what it needs: prompts, the order they are drawn in, and each answer's text.

`sample_answers` decodes through the sample stage's loop (KV cache, rows leave the batch as they
end, one seeded uniform stream per rollout); each step's logits and last hidden state give the
token's log-prob, entropy and (shared-head) value, so a rollout needs no second pass of the policy.
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
from rlaif_code.sample.decoding import DecodeStep, Sampling, decode
from rlaif_code.sample.decoding import left_pad as left_pad  # the PPO stage pads its queries with it
from rlaif_code.sample.sampling import row_seed
from rlaif_code.sample.stops import AnswerEnds


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


def load_reference_answers(cfg: PPOConfig, tokenizer: Any) -> dict[str, list[int]]:
    """prompt -> its reference answer's token ids (the data stage's `target`, then eos): the anchor's data."""
    path = Path(cfg.data_dir) / "train.jsonl"
    references: dict[str, list[int]] = {}
    for lineno, row in iter_jsonl(path):
        target = row.get("target")
        if not isinstance(target, str) or not target.strip():
            raise InputError(f"{path}:{lineno}: missing or empty 'target' field (ppo.anchor_coef needs each "
                             "prompt's reference answer)")
        references[row["prompt"]] = tokenizer(target, add_special_tokens=False)["input_ids"] + [
            tokenizer.eos_token_id]
    return references


def right_pad(sequences: list[list[int]], pad_id: int, device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, T), mask (B, T)): answers start at column 0, as the rollouts' do."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = True
    return ids.to(device), mask.to(device)


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


@dataclass
class Rollout:
    responses: torch.Tensor  # (B, T) sampled tokens, pad after each row's end
    logprobs: torch.Tensor  # (B, T) log-prob of each token under softmax(logits / temperature)
    entropy: torch.Tensor  # (B, T) entropy of that distribution
    values: torch.Tensor | None  # (B, T) value head on the state before each token (when given a head)
    lengths: list[int]  # tokens in each answer, its end token included (the decoder's `Decoded.lengths`)
    ended: list[bool]  # the answer ended (end token or stop string) within max_new_tokens


def rollout_seeds(seed: int, step: int, batch_size: int, rank: int = 0) -> list[int]:
    """Each rollout's sampling seed, keyed by (seed, step, the prompt's place among the step's prompts
    of all processes): a rollout is the same whatever the number of processes, and on a resume."""
    return [row_seed("ppo", seed, step, rank * batch_size + i) for i in range(batch_size)]


@torch.no_grad()
def sample_answers(policy: nn.Module, queries: torch.Tensor, query_mask: torch.Tensor, max_new_tokens: int,
                   temperature: float, top_p: float, ends: AnswerEnds, pad_id: int, seeds: list[int],
                   value_head: nn.Module | None = None) -> Rollout:
    """Sample answers from left-padded prompts through the sample stage's decoding loop
    (`sample.decoding.decode`); T = steps until every row ended.

    A row leaves the batch (and the cache) as soon as it emits an end token or completes a stop
    string. Each step's logits and last hidden state give the token's log-prob, the entropy and
    (with `value_head`) the value, so a rollout needs no second pass of the policy.
    """
    batch, device = queries.shape[0], queries.device
    logprobs, entropy, values = (torch.zeros((batch, max_new_tokens), device=device) for _ in range(3))

    def record(step: DecodeStep) -> None:
        logprobs[step.rows, step.steps] = step.log_probs.gather(-1, step.tokens[:, None]).squeeze(1)
        entropy[step.rows, step.steps] = -(step.probs * step.log_probs).sum(-1)
        if value_head is not None:
            values[step.rows, step.steps] = value_head(step.hidden).squeeze(-1).float()

    decoded = decode(policy, queries, query_mask, ends, Sampling(max_new_tokens, temperature, top_p, seeds, pad_id),
                     on_step=record)
    width = decoded.tokens.shape[1]
    return Rollout(decoded.tokens, logprobs[:, :width], entropy[:, :width],
                   values[:, :width] if value_head is not None else None, decoded.lengths, decoded.ended)


def answer_texts(rollout: Rollout, tokenizer: Any) -> list[str]:
    """Each answer's text: its tokens up to where the decoder ended it, without special tokens and
    without the stop string that ended it (the end token itself stays in `responses`: emitting it
    was the policy's last action)."""
    from rlaif_code.core.models import cut_at_stop

    rows = rollout.responses.tolist()
    return [cut_at_stop(tokenizer.decode(row[:length], skip_special_tokens=True))[0]
            for row, length in zip(rows, rollout.lengths)]


def incomplete_answers(answers: list[str]) -> list[bool]:
    """True where an answer lacks one of the five output fields (or leaves it empty)."""
    from rlaif_code.data.parse import FIELDS, parse_output

    return [any(not parse_output(answer).fields[name].strip() for name in FIELDS) for answer in answers]
