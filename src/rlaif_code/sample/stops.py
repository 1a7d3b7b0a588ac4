"""Where an answer ends while it is being generated: an end-of-text token, or the token whose text
completes a Gorilla stop string ("###Instruction", "\\n###").

Decoding every row's text at every step would cost more than the model on a small CPU, and
transformers' `StopStringCriteria` scans the whole vocabulary each time it is built. Every stop
string contains '#', so a row can only have completed one within a few tokens of emitting a
token whose text holds a '#' (a set of ids found once per tokenizer): only those rows decode a
short tail, and a hit there is confirmed on the whole answer with `cut_at_stop`, so the end is
exactly where `cut_at_stop` finds the first stop string.
"""

from __future__ import annotations

from typing import Any

import torch

from rlaif_code.core.memo import once_per_object
from rlaif_code.core.models import GORILLA_STOP_STRINGS, cut_at_stop, stop_token_ids

MARKER = "#"
# A stop string completes within this many tokens of its last '#': "Instruction" is 11 characters,
# and tokens with no text of their own (skipped special tokens) leave the margin.
RECENT_TOKENS = 24


class AnswerEnds:
    """The end tokens and stop strings of one tokenizer, with the ids whose text holds a '#'."""

    def __init__(self, tokenizer: Any, end_ids: list[int] | None = None) -> None:
        missing = [s for s in GORILLA_STOP_STRINGS if MARKER not in s]
        if missing:
            raise ValueError(f"stop strings {missing} lack {MARKER!r}: the cheap stop check would miss them")
        self.tokenizer = tokenizer
        self.end_ids = list(end_ids) if end_ids is not None else stop_token_ids(tokenizer)
        # each token's own text, kept: the API constraint reads it too (decoding a vocabulary costs ~1 s)
        self.texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
        self.marked_ids = [i for i, text in enumerate(self.texts) if MARKER in text]
        self.tail_tokens = 2 * RECENT_TOKENS

    def text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def first_stop(self, tokens: list[int]) -> int | None:
        """The length of the shortest prefix of `tokens` that ends the answer, else None (for tests and checks)."""
        for length, token in enumerate(tokens, 1):
            if token in self.end_ids or cut_at_stop(self.text(tokens[:length]))[1]:
                return length
        return None

    def tracker(self, n_rows: int, vocab_size: int, device: torch.device | str) -> StopTracker:
        return StopTracker(self, n_rows, vocab_size, device)


class StopTracker:
    """One batch's stop checks, step by step; rows are identified by their index in the batch."""

    def __init__(self, ends: AnswerEnds, n_rows: int, vocab_size: int, device: torch.device | str) -> None:
        self.ends = ends
        self.end_ids = torch.tensor(ends.end_ids, device=device)
        self.marked = torch.zeros(max(vocab_size, len(ends.tokenizer)), dtype=torch.bool, device=device)
        self.marked[ends.marked_ids] = True
        self.last_marked_step = torch.full((n_rows,), -RECENT_TOKENS - 1, dtype=torch.long, device=device)

    def ended(self, answers: torch.Tensor, rows: torch.Tensor, steps: torch.Tensor,
              tokens: torch.Tensor) -> torch.Tensor:
        """(b,) bool: whether `tokens`, just written to `answers[rows, steps]`, end their rows' answers."""
        ended = torch.isin(tokens, self.end_ids)
        marked = self.marked[tokens]
        self.last_marked_step[rows[marked]] = steps[marked]
        recent = (steps - self.last_marked_step[rows] < RECENT_TOKENS) & ~ended
        if bool(recent.any()):
            for slot in recent.nonzero().squeeze(1).tolist():
                row, step = int(rows[slot]), int(steps[slot])
                tail = self.ends.text(answers[row, max(0, step + 1 - self.ends.tail_tokens): step + 1].tolist())
                if any(stop in tail for stop in GORILLA_STOP_STRINGS):
                    ended[slot] = cut_at_stop(self.ends.text(answers[row, : step + 1].tolist()))[1]
        return ended


@once_per_object
def answer_ends_for(tokenizer: Any) -> AnswerEnds:
    """`AnswerEnds` built once per tokenizer (finding the '#' ids decodes the whole vocabulary)."""
    return AnswerEnds(tokenizer)
