"""The decoding loop that the sample stage (hence the eval answers) and PPO's rollouts share.

- Our own loop over the backbone with a KV cache (`kv_cache.SlotCache`): rows leave the batch
  and the cache as soon as they end, so finished rows cost nothing; with more prompts than
  `slots`, waiting prompts join as rows leave (`decode_stream`), so the batch stays full instead
  of running its last long answers a few rows at a time. On a CPU a decoding step costs nearly
  as much for 1 row as for 16 (the weights are read once per step either way).
- The end of an answer: an end-of-text token, or the token completing a Gorilla stop string,
  exactly where `cut_at_stop` finds it (`stops`), or `max_new_tokens`.
- Sampling: softmax(logits / temperature), the top-p nucleus, one draw per row by inverse CDF
  from a uniform of the row's own generator (seeded by the caller); temperature 0 is greedy
  (argmax). A row's answer depends on its prompt and its seed, not on the rows around it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from rlaif_code.sample.kv_cache import SlotCache, compaction
from rlaif_code.sample.sampling import draw_tokens, row_uniforms
from rlaif_code.sample.stops import AnswerEnds

# Columns every running row has left behind are dropped once there are this many (a copy of the
# cache, worth it when it saves attention over that many columns for the steps to come).
DROP_COLUMNS_AT = 32


@dataclass
class DecodeStep:
    """What the loop computed for some rows at one step (PPO records log-probs and values from it)."""

    steps: torch.Tensor  # (b,) the index of the token chosen in each row's answer
    rows: torch.Tensor  # (b,) the rows (their index among the prompts)
    hidden: torch.Tensor  # (b, H) the last hidden state: the state before the token
    log_probs: torch.Tensor | None  # (b, V) log softmax(logits / temperature); None when greedy
    probs: torch.Tensor | None  # (b, V) its exp
    tokens: torch.Tensor  # (b,) the tokens chosen


@dataclass
class Sampling:
    max_new_tokens: int
    temperature: float  # 0 = greedy
    top_p: float = 1.0
    seeds: list[int] | None = None  # one per row, for temperature > 0
    pad_id: int = 0
    min_new_tokens: int = 0  # end tokens are held back before this many (stop strings still end an answer)


# (rows (b,), steps (b,), logits (b, V), answers (n_rows, T): each row's tokens so far) -> logits (b, V)
LogitsHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def backbone_and_head(model: Any) -> tuple[Any, Any]:
    """(backbone, lm_head) of a causal LM, looking through a PEFT wrapper (whose LoRA layers live inside)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix), base.get_output_embeddings()


def positions_of(attention_mask: torch.Tensor) -> torch.Tensor:
    # Left padding does not shift positions: the first real token is at 0, as in generate().
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def left_pad(sequences: list[list[int]], pad_id: int, device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


class Decoder:
    """The rows in flight: slots 0..b-1 of the cache. Rows join by a prompt pass (`admit`) and
    leave when they end (`step` returns them); every per-row record is indexed by row."""

    def __init__(self, model: Any, ends: AnswerEnds, sampling: Sampling, n_rows: int, slots: int, columns: int,
                 on_step: Callable[[DecodeStep], None] | None = None, adjust_logits: LogitsHook | None = None):
        if sampling.temperature > 0 and (sampling.seeds is None or len(sampling.seeds) != n_rows):
            raise ValueError("sampling needs one seed per row")
        self.backbone, self.lm_head = backbone_and_head(model)
        self.device = self.lm_head.weight.device
        self.sampling, self.on_step, self.adjust_logits = sampling, on_step, adjust_logits
        config = self.backbone.config
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.n_layers = config.num_hidden_layers
        self.cache = SlotCache(self.n_layers, slots, columns)
        self.cache_keyword = "cache" if "cache" in inspect.signature(self.backbone.forward).parameters \
            else "past_key_values"  # transformers 5 renamed it; the old name warns on every call
        self.columns = columns
        self.attention = torch.zeros((slots, columns), dtype=torch.long, device=self.device)
        self.answers = torch.full((n_rows, sampling.max_new_tokens), sampling.pad_id, dtype=torch.long,
                                  device=self.device)
        self.lengths, self.ended = [sampling.max_new_tokens] * n_rows, [False] * n_rows
        self.uniforms = (row_uniforms(sampling.seeds, sampling.max_new_tokens, self.device)
                         if sampling.temperature > 0 else None)
        self.tracker = ends.tracker(n_rows, self.lm_head.weight.shape[0], self.device)
        self.end_ids = torch.tensor(ends.end_ids, device=self.device)
        empty = torch.zeros(0, dtype=torch.long, device=self.device)
        # per slot: its row, tokens so far, the position and id of the token to feed next, first column
        self.rows, self.steps, self.positions, self.next_tokens, self.first_column = (empty,) * 5

    @property
    def running(self) -> int:
        return self.rows.shape[0]

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: SlotCache) -> Any:
        return self.backbone(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             **{self.cache_keyword: cache}).last_hidden_state[:, -1]

    def _choose(self, rows: torch.Tensor, steps: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(tokens, done) for `rows` at `steps`, with the answers and their ends recorded."""
        logits = self.lm_head(hidden).float()
        if self.sampling.min_new_tokens:
            early = (steps < self.sampling.min_new_tokens).nonzero()
            logits[early, self.end_ids] = float("-inf")
        if self.adjust_logits is not None:
            logits = self.adjust_logits(rows, steps, logits, self.answers)
        log_probs = probs = None
        if self.uniforms is not None:
            log_probs = torch.log_softmax(logits / self.sampling.temperature, dim=-1)
            probs = log_probs.exp()
            tokens = draw_tokens(probs, self.sampling.top_p, self.uniforms[rows, steps])
        else:
            tokens = logits.argmax(-1)
        if self.on_step is not None:
            self.on_step(DecodeStep(steps, rows, hidden, log_probs, probs, tokens))
        self.answers[rows, steps] = tokens
        ended = self.tracker.ended(self.answers, rows, steps, tokens)
        done = ended | (steps + 1 >= self.sampling.max_new_tokens)
        for row, step, hit in zip(rows[done].tolist(), steps[done].tolist(), ended[done].tolist()):
            self.lengths[row], self.ended[row] = step + 1, hit
        return tokens, done

    def can_admit(self, width: int) -> bool:
        """Whether prompts `width` columns wide can join now (their prompts end at the current column)."""
        return self.running == 0 or width <= self.cache.width

    def admit(self, ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor) -> list[int]:
        """Run the left-padded prompts `ids` (m, P) of `rows` and choose their first tokens; the
        rows that go on join the running ones. Returns the rows already done."""
        group, width = ids.shape
        prompt_cache = SlotCache(self.n_layers, group, width)
        hidden = self._forward(ids, mask, positions_of(mask), prompt_cache)
        tokens, done = self._choose(rows, torch.zeros_like(rows), hidden)
        going = (~done).nonzero().squeeze(1)
        if going.numel():
            at = self.cache.width if self.running else width
            slots = torch.arange(self.running, self.running + going.numel(), device=self.device)
            self.cache.insert(slots, prompt_cache, going, at)
            self.attention[slots] = 0
            self.attention[slots, at - width:at] = mask[going]
            lengths = mask[going].sum(1)
            self.rows = torch.cat([self.rows, rows[going]])
            self.steps = torch.cat([self.steps, torch.ones_like(lengths)])
            self.positions = torch.cat([self.positions, lengths])
            self.next_tokens = torch.cat([self.next_tokens, tokens[going]])
            self.first_column = torch.cat([self.first_column, at - lengths])
        return rows[done].tolist()

    def step(self) -> list[int]:
        """Feed every running row its last token and choose the next; returns the rows that ended."""
        unused = int(self.first_column.min())
        if unused >= DROP_COLUMNS_AT or self.cache.width >= self.columns:
            self.cache.drop_columns(self.running, unused)
            width = self.cache.width
            self.attention[: self.running, :width] = self.attention[: self.running, unused: width + unused].clone()
            self.first_column = self.first_column - unused
        column = self.cache.width
        self.attention[: self.running, column] = 1
        hidden = self._forward(self.next_tokens[:, None], self.attention[: self.running, : column + 1],
                               self.positions[:, None], self.cache)
        tokens, done = self._choose(self.rows, self.steps, hidden)
        finished = self.rows[done].tolist()
        self.steps, self.positions, self.next_tokens = self.steps + 1, self.positions + 1, tokens
        if finished:
            order, to, source = compaction(done)
            self.cache.move_rows(to, source)
            self.attention[to] = self.attention[source]
            self.rows, self.steps, self.positions, self.next_tokens, self.first_column = (
                x[order] for x in (self.rows, self.steps, self.positions, self.next_tokens, self.first_column))
        return finished

    def answer(self, row: int) -> tuple[list[int], bool]:
        return self.answers[row, : self.lengths[row]].tolist(), self.ended[row]


@dataclass
class Decoded:
    tokens: torch.Tensor  # (B, T) each answer, pad after its end; T = the longest answer
    lengths: list[int]  # tokens in each answer, its end token included
    ended: list[bool]  # the answer ended (end token or stop string) within max_new_tokens


@torch.no_grad()  # not inference_mode: PPO trains on what its rollouts return
def decode(model: Any, ids: torch.Tensor, mask: torch.Tensor, ends: AnswerEnds, sampling: Sampling,
           on_step: Callable[[DecodeStep], None] | None = None, adjust_logits: LogitsHook | None = None) -> Decoded:
    """Answers to the left-padded prompts `ids` (B, P) with attention `mask` (B, P), as one batch."""
    batch, width = ids.shape
    decoder = Decoder(model, ends, sampling, batch, batch, width + sampling.max_new_tokens, on_step, adjust_logits)
    decoder.admit(ids, mask, torch.arange(batch, device=ids.device))
    while decoder.running:
        decoder.step()
    return Decoded(decoder.answers[:, : max(decoder.lengths)], decoder.lengths, decoder.ended)


@torch.no_grad()
def decode_stream(model: Any, prompts: list[list[int]], ends: AnswerEnds, sampling: Sampling, slots: int,
                  adjust_logits: LogitsHook | None = None) -> Iterator[tuple[int, list[int], bool]]:
    """(prompt index, answer tokens, ended) as each answer ends, at most `slots` rows in flight.

    Prompts join in the order given (so similar lengths, if sorted, share little padding), in
    groups of at least an eighth of the slots, once the running rows' columns can hold them.
    """
    if not prompts:
        return
    device = backbone_and_head(model)[1].weight.device
    columns = max(map(len, prompts)) + sampling.max_new_tokens + DROP_COLUMNS_AT
    decoder = Decoder(model, ends, sampling, len(prompts), slots, columns, adjust_logits=adjust_logits)
    waiting, group_size = 0, max(1, slots // 8)
    while waiting < len(prompts) or decoder.running:
        free = slots - decoder.running
        group = prompts[waiting: waiting + free]
        if group and (free >= group_size or waiting + free >= len(prompts)) and \
                decoder.can_admit(max(map(len, group))):
            ids, mask = left_pad(group, sampling.pad_id, device)
            rows = torch.arange(waiting, waiting + len(group), device=device)
            waiting += len(group)
            for row in decoder.admit(ids, mask, rows):
                yield (row, *decoder.answer(row))
        if decoder.running:
            for row in decoder.step():
                yield (row, *decoder.answer(row))
