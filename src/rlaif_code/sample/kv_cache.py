"""A KV cache for decoding with rows that leave as they finish and rows that join mid-way, in
buffers allocated once.

transformers' `DynamicCache` concatenates every layer's keys and values at every step: on a
CPU that is a fresh allocation and a copy of the whole cache per step (~10% of a SmolLM2 step
at batch 32, more as answers grow). Here each layer writes into buffers of shape (slots,
kv heads, columns, head dim) and hands attention a view of the running rows, which are always
slots 0..b-1. When rows finish, running rows from the end of that range move into the freed
slots (`move_rows`: only the moved rows are copied); joining rows are copied in from the cache
of their own prompt pass (`insert`), their prompts ending at the current column; columns no
running row uses any more are dropped from the left (`drop_columns`).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer


class SlotLayer(DynamicLayer):
    def __init__(self, slots: int, columns: int) -> None:
        super().__init__()
        self.slots, self.columns = slots, columns
        self.length = 0  # columns in use; the next token of every running row goes here

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.key_buffer = key_states.new_zeros((self.slots, key_states.shape[1], self.columns, key_states.shape[-1]))
        self.value_buffer = value_states.new_zeros((self.slots, value_states.shape[1], self.columns,
                                                    value_states.shape[-1]))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        rows, end = key_states.shape[0], self.length + key_states.shape[-2]
        if end > self.columns:
            raise RuntimeError(f"KV cache full: {end} columns, {self.columns} allocated")
        self.key_buffer[:rows, :, self.length:end] = key_states
        self.value_buffer[:rows, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self.key_buffer[:rows, :, :end], self.value_buffer[:rows, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


class SlotCache(Cache):
    """One `SlotLayer` per decoder layer, each of `slots` rows by `columns` positions."""

    def __init__(self, n_layers: int, slots: int, columns: int) -> None:
        super().__init__(layers=[SlotLayer(slots, columns) for _ in range(n_layers)])

    @property
    def width(self) -> int:
        return self.layers[0].length

    def move_rows(self, to: torch.Tensor, source: torch.Tensor) -> None:
        for layer in self.layers:
            if layer.is_initialized:
                layer.key_buffer[to, :, : layer.length] = layer.key_buffer[source, :, : layer.length]
                layer.value_buffer[to, :, : layer.length] = layer.value_buffer[source, :, : layer.length]

    def insert(self, slots: torch.Tensor, prompts: SlotCache, rows: torch.Tensor, width: int) -> None:
        """Copy rows `rows` of `prompts` (a cache holding just a prompt pass) into `slots`, their
        columns ending at `width`, which becomes the width of every slot."""
        for layer, source in zip(self.layers, prompts.layers):
            if not layer.is_initialized:
                layer.lazy_initialization(source.keys, source.values)
            start = width - source.length
            layer.key_buffer[slots, :, start:width] = source.key_buffer[rows, :, : source.length]
            layer.value_buffer[slots, :, start:width] = source.value_buffer[rows, :, : source.length]
            layer.length = width

    def drop_columns(self, running: int, count: int) -> None:
        """Drop the first `count` columns of the running slots (no running row attends to them)."""
        for layer in self.layers:
            kept = slice(count, layer.length)
            layer.key_buffer[:running, :, : layer.length - count] = layer.key_buffer[:running, :, kept].clone()
            layer.value_buffer[:running, :, : layer.length - count] = layer.value_buffer[:running, :, kept].clone()
            layer.length -= count


def compaction(ended: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For running slots 0..b-1 of which `ended` (b,) finish: (order, to, source).

    The running rows end up in slots 0..b'-1: slot i holds what was in slot `order[i]`; only the
    rows `source` (running rows beyond b') move, into the finished slots `to` below b'.
    """
    running = (~ended).nonzero().squeeze(1)
    kept = running.shape[0]
    to = ended[:kept].nonzero().squeeze(1)
    source = running[running >= kept]
    order = torch.arange(kept, device=ended.device)
    order[to] = source
    return order, to, source
