"""How close a synthesized instruction comes to an eval instruction: word n-gram overlap.

overlap(candidate) = the largest share of the candidate's word n-grams found in any *one* eval
instruction (0: nothing shared, 1: every n-gram of it is in some eval instruction). Per eval
instruction, not pooled over all of them, so that common phrases spread over many eval items
("I want to", "an image of") do not add up to a false match. A candidate shorter than n words
counts 1 when it equals an eval instruction and 0 otherwise. Words are lower-cased runs of
letters and digits.
"""

from __future__ import annotations

import re
from collections import Counter

_WORD_RE = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


class OverlapIndex:
    """The eval instructions' n-grams, indexed for the overlap of many candidates."""

    def __init__(self, references: list[str], n: int) -> None:
        if n < 1:
            raise ValueError(f"n-gram size must be at least 1, got {n}")
        self.n = n
        self.size = len(references)
        self._by_gram: dict[tuple[str, ...], list[int]] = {}
        self._whole = {" ".join(words(text)) for text in references}
        for i, text in enumerate(references):
            for gram in ngrams(words(text), n):
                self._by_gram.setdefault(gram, []).append(i)

    def overlap(self, candidate: str) -> float:
        tokens = words(candidate)
        grams = ngrams(tokens, self.n)
        if not grams:
            return 1.0 if tokens and " ".join(tokens) in self._whole else 0.0
        shared: Counter[int] = Counter()
        for gram in grams:
            shared.update(self._by_gram.get(gram, ()))
        return max(shared.values()) / len(grams) if shared else 0.0
