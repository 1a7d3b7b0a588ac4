"""Prompts in Gorilla's format, with optional retrieved API documentation.

    ###Instruction: <task>
    [Use this API documentation for reference: <doc>]
    ###Output: <<<domain>>>: ... <<<code>>>: ...

`oracle` puts the reference API's own document in the prompt (Gorilla's oracle
setting); `bm25` the top-k database documents for the instruction.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from rlaif_code.data.apibench import Example
from rlaif_code.data.parse import format_answer

Retrieval = Literal["none", "oracle", "bm25"]

OUTPUT_MARKER = "###Output:"
INSTRUCTION_MARKER = "###Instruction:"

# Fields of an API document worth a small model's context; the rest (example code,
# performance tables) is long and rarely decides which API to call.
_DOC_FIELDS = ("domain", "framework", "functionality", "api_name", "api_call", "description")


def api_document(api: dict[str, Any], max_chars: int = 600) -> str:
    doc = {k: api.get(k) for k in _DOC_FIELDS if api.get(k)}
    text = json.dumps(doc, ensure_ascii=False)
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def build_prompt(instruction: str, context_docs: list[str] | None = None) -> str:
    prompt = f"{INSTRUCTION_MARKER} {instruction.strip()}\n"
    for doc in context_docs or []:
        prompt += f"Use this API documentation for reference: {doc}\n"
    return prompt + OUTPUT_MARKER


def build_target(example: Example) -> str:
    return " " + format_answer(example.fields())


_TOKEN_RE = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


class BM25Index:
    """Top-k of any list of texts for a query (rank-bm25's Okapi BM25)."""

    def __init__(self, texts: list[str]) -> None:
        from rank_bm25 import BM25Okapi

        self._bm25 = BM25Okapi([_tokens(text) for text in texts])

    def top_k_indices(self, query: str, k: int) -> list[int]:
        """Positions of the k best texts, best first (ties: list order)."""
        scores = self._bm25.get_scores(_tokens(query))
        return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


class BM25Retriever(BM25Index):
    """Top-k API documents for an instruction: each database entry indexed as its JSON text."""

    def __init__(self, api_database: list[dict[str, Any]]) -> None:
        super().__init__([json.dumps(api, ensure_ascii=False) for api in api_database])
        self.apis = api_database

    def top_k(self, query: str, k: int) -> list[dict[str, Any]]:
        return [self.apis[i] for i in self.top_k_indices(query, k)]


class PromptBuilder:
    def __init__(self, retrieval: Retrieval = "none", api_database: list[dict[str, Any]] | None = None,
                 top_k: int = 1, doc_chars: int = 600) -> None:
        self.retrieval = retrieval
        self.top_k = top_k
        self.doc_chars = doc_chars
        self._retriever = None
        if retrieval == "bm25":
            if not api_database:
                raise ValueError("bm25 retrieval needs the API database")
            self._retriever = BM25Retriever(api_database)

    def __call__(self, example: Example) -> str:
        docs: list[str] = []
        if self.retrieval == "oracle":
            docs = [api_document(example.reference_api, self.doc_chars)]
        elif self.retrieval == "bm25":
            assert self._retriever is not None
            docs = [api_document(api, self.doc_chars) for api in self._retriever.top_k(example.instruction, self.top_k)]
        return build_prompt(example.instruction, docs)
