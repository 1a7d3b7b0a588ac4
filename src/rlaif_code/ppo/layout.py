"""How a batch of prompt + answer rows is laid out for a forward pass, and the policy-with-value module.

PPO batches are ragged (answers end at different lengths). `packed_inputs` lays each sequence's
real tokens end to end, several per row, with positions restarting at 0 and no attention mask,
which transformers turns into block-diagonal causal attention; `padded_inputs` keeps the rows
(less the columns none of them uses) for architectures that ignore packed position ids. Either
way, the LM head runs on answer-predicting states only: every output is a flat (n,) or (n, V)
tensor over the n real answer tokens, in the order of `answer_mask.nonzero()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from rlaif_code.sample.decoding import backbone_and_head, positions_of


@dataclass
class ForwardInputs:
    """A micro-batch laid out for one backbone call, and where its answer-predicting states are.

    `select` indexes the flattened (rows x columns) hidden states: entry i is the state
    just before the i-th answer token, answer tokens taken row by row (the order of
    `answer_mask.nonzero()`), so every model output is a flat (n,) or (n, V) tensor over
    real answer tokens only.
    """

    input_ids: torch.Tensor  # (R, N)
    position_ids: torch.Tensor  # (R, N)
    attention_mask: torch.Tensor | None  # (R, N); None when packed
    select: torch.Tensor  # (n,)

    def as_args(self) -> tuple[Any, ...]:
        return self.input_ids, self.position_ids, self.attention_mask, self.select


def padded_inputs(ids: torch.Tensor, attention: torch.Tensor, context_length: int,
                  answer_mask: torch.Tensor) -> ForwardInputs:
    """The rows as they are, less the columns none of them uses (shared left padding, the tail
    past the longest answer)."""
    left = int((attention[:, :context_length] == 0).all(0).long().cumprod(0).sum())
    left = min(left, context_length - 1)  # the last prompt column predicts the first answer token
    answer_width = int(answer_mask.sum(1).max())
    ids, attention = ids[:, left: context_length + answer_width], attention[:, left: context_length + answer_width]
    rows, width = ids.shape
    columns = (context_length - left - 1) + torch.arange(answer_width, device=ids.device)
    flat = torch.arange(rows, device=ids.device)[:, None] * width + columns[None, :]  # (b, t)
    return ForwardInputs(ids, positions_of(attention), attention, flat[answer_mask[:, :answer_width]])


def attention_cost(config: Any) -> float:
    """FLOPs of one (query, key) pair of attention relative to one token through a layer's
    weight matrices: 4 * hidden / (2 * (4 * hidden^2 + 3 * hidden * intermediate)) for a Llama block."""
    hidden = config.hidden_size
    return 2.0 / (4 * hidden + 3 * getattr(config, "intermediate_size", 4 * hidden))


def _balanced_bins(lengths: list[int], n_bins: int) -> tuple[list[list[int]], int]:
    """Longest sequence first into the emptiest row; (rows, width of the fullest row)."""
    bins: list[list[int]] = [[] for _ in range(n_bins)]
    loads = [0] * n_bins
    for row in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
        emptiest = min(range(n_bins), key=loads.__getitem__)
        bins[emptiest].append(row)
        loads[emptiest] += lengths[row]
    return bins, max(loads)


def packed_inputs(ids: torch.Tensor, attention: torch.Tensor, context_length: int, answer_mask: torch.Tensor,
                  row_tokens: int, pair_cost: float = 3e-4) -> ForwardInputs:
    """Padding-free layout: each sequence's real tokens end to end, several sequences per row.

    Positions restart at 0 for each sequence and no attention mask is passed, which
    transformers turns into a block-diagonal causal mask: each sequence sees only itself.
    PPO batches are ragged (answers end at different lengths), so this skips the padding
    a rectangular batch would compute. Every row is as wide as the fullest, and attention
    costs the square of a row's width (`pair_cost`, see `attention_cost`), so the number of
    rows is chosen to minimise rows * width * (1 + pair_cost * width), rows of at most
    `row_tokens` tokens unless one sequence is longer.
    """
    lengths = attention.sum(1).tolist()
    fewest = min(len(lengths), max(1, -(-sum(lengths) // row_tokens)))
    layouts = [_balanced_bins(lengths, n) for n in range(fewest, len(lengths) + 1)]
    bins, width = min(layouts, key=lambda layout: len(layout[0]) * layout[1] * (1 + pair_cost * layout[1]))
    device = ids.device
    # Filler past a row's last sequence sits at position 0: each filler token is a sequence of its own.
    packed_ids = torch.zeros((len(bins), width), dtype=torch.long, device=device)
    packed_positions = torch.zeros((len(bins), width), dtype=torch.long, device=device)
    flat_index = torch.zeros_like(ids)  # (b, L): where each real token went in the flattened packed rows
    for bin_index, rows in enumerate(bins):
        offset = 0
        for row in rows:
            columns = attention[row].nonzero().squeeze(1)
            n = columns.numel()
            span = torch.arange(n, device=device)
            packed_ids[bin_index, offset: offset + n] = ids[row, columns]
            packed_positions[bin_index, offset: offset + n] = span
            flat_index[row, columns] = bin_index * width + offset + span
            offset += n
    select = flat_index[:, context_length - 1: -1][answer_mask]
    return ForwardInputs(packed_ids, packed_positions, None, select)


def forward_inputs(ids: torch.Tensor, attention: torch.Tensor, context_length: int, answer_mask: torch.Tensor,
                   pack_tokens: int, pair_cost: float = 3e-4) -> ForwardInputs:
    if pack_tokens > 0:
        return packed_inputs(ids, attention, context_length, answer_mask, pack_tokens, pair_cost)
    return padded_inputs(ids, attention, context_length, answer_mask)


@dataclass
class BatchLayout:
    """A step's prompt + answer rows, and how any subset of them is laid out for one forward pass."""

    query_responses: torch.Tensor  # (B, P + T)
    attention: torch.Tensor  # (B, P + T)
    context_length: int  # P: the first answer token's column
    responses: torch.Tensor  # (B, T)
    answer_mask: torch.Tensor  # (B, T)
    pack_tokens: int  # 0: padded rows
    pair_cost: float  # see `attention_cost`

    def inputs(self, rows: slice | torch.Tensor) -> ForwardInputs:
        return forward_inputs(self.query_responses[rows], self.attention[rows], self.context_length,
                              self.answer_mask[rows], self.pack_tokens, self.pair_cost)

    def tokens(self, rows: slice | torch.Tensor) -> torch.Tensor:
        """(n,) the answer tokens of `rows`, in the order of the model's flat outputs."""
        return self.responses[rows][self.answer_mask[rows]]


def answer_states(backbone: nn.Module, inputs: ForwardInputs) -> torch.Tensor:
    """Last hidden states before each answer token, (n, H)."""
    hidden = backbone(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                      position_ids=inputs.position_ids, use_cache=False).last_hidden_state
    return hidden.flatten(0, 1)[inputs.select]


def answer_logits(model: nn.Module, inputs: ForwardInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (n, V), hidden (n, H)) for each answer token: the LM head never runs on prompts or padding."""
    backbone, lm_head = backbone_and_head(model)
    hidden = answer_states(backbone, inputs)
    return lm_head(hidden), hidden


@torch.no_grad()
def packing_keeps_sequences_apart(model: nn.Module) -> bool:
    """Whether this architecture honours restarting position ids (checked once on two short sequences);
    if not, PPO falls back to padded rows."""
    device = next(model.parameters()).device
    ids = torch.tensor([[3, 4, 5, 6, 7], [0, 8, 9, 10, 11]], device=device) % model.config.vocab_size
    attention = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], device=device)
    answer_mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool, device=device)
    padded, _ = answer_logits(model, padded_inputs(ids, attention, 2, answer_mask))
    packed, _ = answer_logits(model, packed_inputs(ids, attention, 2, answer_mask, 64))
    return bool((padded.float() - packed.float()).abs().max() <= 1e-3 * padded.float().abs().max() + 1e-4)


class PolicyWithValue(nn.Module):
    """The policy plus its value function, one module so Accelerate prepares (and DDP syncs) both.

    shared: values = a linear head on the policy's last hidden state (the default).
    separate: values = a linear head on a second backbone (initialised from the policy).
    """

    def __init__(self, policy: nn.Module, value_backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.value_backbone = value_backbone
        self.value_head = nn.Linear(policy.config.hidden_size, 1)
        # Zero init: values start at 0 and, with a shared backbone, the first value-loss
        # gradients do not disturb the policy's features.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                select: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = ForwardInputs(input_ids, position_ids, attention_mask, select)
        logits, hidden = answer_logits(self.policy, inputs)  # (n, V), (n, H)
        if self.value_backbone is not None:
            hidden = answer_states(self.value_backbone, inputs)
        return logits, self.value_head(hidden).squeeze(-1).float()  # (n, V), (n,)


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0

