"""Seeded sampling: each row draws from its own generator, so an answer does not depend on the batch.

A row's stream is one uniform per decoding step; a token is drawn by inverse CDF over the
vocabulary (in token-id order) of softmax(logits / temperature), truncated to the top-p nucleus.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch

# top-p is first looked for among a row's most likely tokens: a full sort of a 49k vocabulary
# costs ~2.5 ms per row on a small CPU. SmolLM2's nuclei at top_p 0.95, temperature 0.9: median
# 30 tokens, 18% over 256, 3% over 1024.
NUCLEUS_CANDIDATES = (256, 4096)


def row_seed(*key: Any) -> int:
    """A row's sampling seed from what identifies it (e.g. seed, example_id, sample_id)."""
    return zlib.crc32(":".join(str(part) for part in key).encode())


def row_uniforms(seeds: list[int], steps: int, device: torch.device | str) -> torch.Tensor:
    """(rows, steps) float64: each row's stream of uniforms, one per decoding step."""
    draws = [torch.rand(steps, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) for seed in seeds]
    return torch.stack(draws).to(device)


def _draw_among(top: torch.Tensor, ids: torch.Tensor, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
    """Draw from candidates `top` (n, k), sorted by probability, descending, with token ids `ids`."""
    kept = top.masked_fill(top.cumsum(-1) - top > top_p, 0.0)  # the smallest prefix reaching top_p
    # The CDF runs over token ids in increasing order, as it would over the whole vocabulary
    # (where left-out tokens own empty intervals): the same draw whatever the candidates.
    ids_in_order, order = ids.sort(-1)
    cdf = kept.gather(-1, order).double().cumsum(-1)
    pick = torch.searchsorted(cdf, uniforms[:, None] * cdf[:, -1:], right=True).clamp(max=ids.shape[-1] - 1)
    return ids_in_order.gather(-1, pick).squeeze(1)


def _draw_from_vocabulary(probs: torch.Tensor, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
    if top_p < 1.0:
        top, ids = probs.sort(dim=-1, descending=True)
        probs = torch.zeros_like(probs).scatter(-1, ids, top.masked_fill(top.cumsum(-1) - top > top_p, 0.0))
    cdf = probs.double().cumsum(-1)
    pick = torch.searchsorted(cdf, uniforms[:, None] * cdf[:, -1:], right=True)
    return pick.squeeze(1).clamp(max=probs.shape[-1] - 1)


def draw_tokens(probs: torch.Tensor, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row of `probs` (b, V) by inverse CDF at `uniforms` (b,), nucleus-truncated when top_p < 1.

    Inverse CDF rather than torch.multinomial, which on CPU costs ~15x more over a 49k vocabulary.
    """
    vocab = probs.shape[-1]
    if top_p >= 1.0:
        return _draw_from_vocabulary(probs, top_p, uniforms)
    tokens = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    pending = torch.arange(probs.shape[0], device=probs.device)
    for k in (k for k in NUCLEUS_CANDIDATES if k < vocab):
        top, ids = probs[pending].topk(k, dim=-1)
        # The nucleus lies among the k when the first token left out would be outside it (the
        # margin covers the rounding of the cumulative sum, which the full sort computes too).
        inside = top.sum(-1) > top_p + 1e-6
        tokens[pending[inside]] = _draw_among(top[inside], ids[inside], top_p, uniforms[pending[inside]])
        pending = pending[~inside]
        if pending.numel() == 0:
            return tokens
    tokens[pending] = _draw_from_vocabulary(probs[pending], top_p, uniforms[pending])
    return tokens
