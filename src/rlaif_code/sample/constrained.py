"""Decoding that cannot invent an API id: a string argument of a call to one of the API database's
functions is decoded only as a value that the database passes to that function (ToolDec's idea,
Zhang et al. 2023, a finite-state constraint on tool names, applied here to the ids inside a call).

What is constrained, and why so narrowly:
- Only inside an answer's api_call and code fields: the explanation is prose, whose apostrophes
  are not string literals.
- Only a literal that is an argument of a call whose function the database calls, matched by a
  key: `X.from_pretrained` for any class X (a tokenizer loads the id its model does), otherwise
  the last two parts of the dotted name (`hub.load` is torch.hub's, `torch.load` is not).
- Only positional arguments, and keywords to which the database passes a string for that
  function (`model=`, `repo_or_dir=`): `revision='main'` or `return_tensors='pt'` stay free.
- The value may be any the database passes to that function, in any position: TorchHub's
  database writes `repo_or_dir=` and `model=`, its answers write both positionally.
- Once a call holds a value, its later literals may only take values that one database call of
  that function passes together with the values already written (`pipeline('summarization',
  model=` then names a summarization model of the database): Gorilla's AST match looks for the
  database call's arguments together, and a real task beside a real model of another task matches
  no API (hallucination).

What it guarantees: every id an answer passes to a database function is one the database has
(`wide_resnet50`, which torchvision's hubconf lacks, can no longer be written). Not that it is
the right API for the task, nor that the code runs.

How: each answer's text is scanned as it is written (`Scan`: field, open calls, the current
argument, an open literal). Inside a constrained literal the allowed tokens are computed exactly
(a token either extends the literal towards a value or closes it on one), memoised by state.
Elsewhere in those fields only a token holding a quote can open a literal, and only the
`CHECKED_TOKENS` likeliest tokens are checked: exact for greedy decoding, and at temperature the
tokens left unchecked have almost no probability (a literal opened by one of them and already off
every value is left free rather than forced).
"""

from __future__ import annotations

import ast
import bisect
import re
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from rlaif_code.core.memo import once_per_object
from rlaif_code.sample.stops import answer_ends_for

CONSTRAINED_FIELDS = frozenset({"api_call", "code"})
QUOTES = "'\""
CHECKED_TOKENS = 256
_FIELD_MARKER = re.compile(r"<<<(\w+)>>>$")
_KEYWORD = re.compile(r"(\w+)\s*=")
_MAX_NAME = 96  # the dotted name before a "(" (longer ones are not API functions)


def call_key(dotted: str) -> str:
    """The key under which a call's function is looked up in the database's table (see the module doc)."""
    parts = dotted.split(".")
    return "*.from_pretrained" if parts[-1] == "from_pretrained" else ".".join(parts[-2:])


class Values:
    """A sorted set of strings with a cheap prefix test."""

    def __init__(self, strings: Iterable[str]) -> None:
        self.sorted = tuple(sorted(set(strings)))
        self.members = frozenset(self.sorted)

    def with_prefix(self, prefix: str) -> tuple[str, ...]:
        start = bisect.bisect_left(self.sorted, prefix)
        end = start
        while end < len(self.sorted) and self.sorted[end].startswith(prefix):
            end += 1
        return self.sorted[start:end]

    def has_prefix(self, prefix: str) -> bool:
        start = bisect.bisect_left(self.sorted, prefix)
        return start < len(self.sorted) and self.sorted[start].startswith(prefix)


class ApiValues:
    """For each function key: the string values the database passes it, and the keywords that carry them."""

    def __init__(self, api_calls: Iterable[str]) -> None:
        values: dict[str, set[str]] = {}
        keywords: dict[str, set[str]] = {}
        together: dict[str, set[frozenset[str]]] = {}
        for text in api_calls:
            try:
                tree = ast.parse(text.strip())
            except SyntaxError:
                continue  # Gorilla's databases hold a few calls that are not Python; their ids stay free
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                key = call_key(ast.unparse(node.func))
                strings = [(None, a) for a in node.args] + [(k.arg, k.value) for k in node.keywords if k.arg]
                passed = set()
                for keyword, value in strings:
                    if isinstance(value, ast.Constant) and isinstance(value.value, str) and _usable(value.value):
                        passed.add(value.value)
                        if keyword:
                            keywords.setdefault(key, set()).add(keyword)
                if passed:
                    values.setdefault(key, set()).update(passed)
                    together.setdefault(key, set()).add(frozenset(passed))
        self.values = {key: Values(found) for key, found in values.items()}
        self.keywords = {key: frozenset(keywords.get(key, ())) for key in values}
        self.together = {key: tuple(found) for key, found in together.items()}
        self._beside: dict[tuple[str, frozenset[str]], Values] = {}

    def __len__(self) -> int:
        return len(self.values)

    def key_of(self, dotted: str) -> str | None:
        key = call_key(dotted) if dotted else None
        return key if key in self.values else None

    def values_for(self, key: str | None, argument: str, written: frozenset[str] = frozenset()) -> Values | None:
        """The values a literal may take as the argument whose text so far is `argument`, in a call that
        already holds the values `written`; None: free."""
        if key is None:
            return None
        argument = argument.strip()
        if argument:
            keyword = _KEYWORD.fullmatch(argument)
            if not (keyword and keyword.group(1) in self.keywords[key]):
                return None
        return self.beside(key, written) if written else self.values[key]

    def beside(self, key: str, written: frozenset[str]) -> Values:
        """The values of the database calls of `key` that pass every value in `written` (one object per
        pair, so that its id can key a memo); all of the function's values where no call passes them all."""
        found = self._beside.get((key, written))
        if found is None:
            calls = [passed for passed in self.together[key] if written <= passed]
            found = Values(set().union(*calls)) if calls else self.values[key]
            self._beside[(key, written)] = found
        return found


def _usable(value: str) -> bool:
    return bool(value) and not any(c in value for c in QUOTES + "\n\\")


@dataclass(frozen=True)
class OpenLiteral:
    quote: str
    text: str
    values: Values | None  # None: a free literal


class Scan:
    """Where one answer stands, character by character (see the module doc)."""

    __slots__ = ("field", "tail", "calls", "name", "argument", "literal", "opened")

    def __init__(self) -> None:
        self.field: str | None = None
        self.tail = ""  # the last characters, to find "<<<field>>>" markers
        # The open calls: each one's key (None: not a database function) and the values written in it.
        self.calls: tuple[tuple[str | None, frozenset[str]], ...] = ()
        self.name = ""  # the dotted name being written (a "(" makes it a call)
        self.argument = ""  # the current argument's text, up to any literal
        self.literal: OpenLiteral | None = None
        self.opened = 0  # constrained literals opened so far

    def copy(self) -> Scan:
        twin = Scan.__new__(Scan)
        for slot in Scan.__slots__:
            setattr(twin, slot, getattr(self, slot))
        return twin

    @property
    def constrained(self) -> bool:
        return self.field in CONSTRAINED_FIELDS

    def signature(self) -> tuple[Any, ...]:
        literal = self.literal
        return (self.field, self.calls, self.name, self.argument,
                None if literal is None else (literal.quote, literal.text, id(literal.values)))

    def feed(self, text: str, table: ApiValues) -> bool:
        """Advance over `text`; False when a constrained literal left every value (it is then freed)."""
        valid = True
        for char in text:
            valid &= self._char(char, table)
        return valid

    def _char(self, char: str, table: ApiValues) -> bool:
        self.tail = (self.tail + char)[-32:]
        if char == ">" and (marker := _FIELD_MARKER.search(self.tail)):
            self.field, self.calls, self.name, self.argument, self.literal = marker.group(1), (), "", "", None
            return True
        if not self.constrained:
            return True
        literal = self.literal
        if literal is not None:
            if char == literal.quote or char == "\n":
                self.literal, self.argument = None, self.argument + "<str>"
                if literal.values is None:
                    return True
                if char == literal.quote and literal.text in literal.values.members:
                    key, written = self.calls[-1]
                    self.calls = (*self.calls[:-1], (key, written | {literal.text}))
                    return True
                return False
            text = literal.text + char
            if literal.values is not None and not literal.values.has_prefix(text):
                self.literal = OpenLiteral(literal.quote, text, None)
                return False
            self.literal = OpenLiteral(literal.quote, text, literal.values)
            return True
        if char in QUOTES:
            key, written = self.calls[-1] if self.calls else (None, frozenset())
            self.literal = OpenLiteral(char, "", table.values_for(key, self.argument, written))
            self.opened += self.literal.values is not None
        elif char == "(":
            self.calls = (*self.calls, (table.key_of(self.name), frozenset()))
            self.argument = ""
        elif char == ")":
            self.calls, self.argument = self.calls[:-1], self.argument + ")"
        elif char == ",":
            self.argument = ""
        else:
            self.argument = (self.argument + char)[-_MAX_NAME:]
        self.name = (self.name + char)[-_MAX_NAME:] if (char.isalnum() or char in "_.") else ""
        return True


class TokenTexts:
    """Each token's text, and for each quote the tokens holding it, grouped by the text before it."""

    def __init__(self, tokenizer: Any) -> None:
        self.texts = answer_ends_for(tokenizer).texts
        self.by_text: dict[str, list[int]] = {}
        self.before_quote: dict[str, dict[str, list[int]]] = {q: {} for q in QUOTES}
        self.has_quote = torch.zeros(len(self.texts), dtype=torch.bool)
        for token, text in enumerate(self.texts):
            self.by_text.setdefault(text, []).append(token)
            for quote in QUOTES:
                if quote in text:
                    self.before_quote[quote].setdefault(text[: text.index(quote)], []).append(token)
                    self.has_quote[token] = True


@once_per_object
def token_texts(tokenizer: Any) -> TokenTexts:
    return TokenTexts(tokenizer)


class ApiConstraint:
    """A decoding loop's logits hook (`decoding.LogitsHook`) for one stream of answers; rows are prompts."""

    def __init__(self, table: ApiValues, tokenizer: Any) -> None:
        self.table, self.tokens = table, token_texts(tokenizer)
        self.scans: dict[int, Scan] = {}
        self.fed: dict[int, int] = {}
        self._allowed: dict[tuple[Any, ...], torch.Tensor] = {}
        self._valid: dict[tuple[tuple[Any, ...], int], bool] = {}
        self.overruled = 0  # steps whose likeliest token was banned

    def __call__(self, rows: torch.Tensor, steps: torch.Tensor, logits: torch.Tensor,
                 answers: torch.Tensor) -> torch.Tensor:
        """logits (b, V) with the banned tokens at -inf; `answers` (n_rows, T) holds each row's tokens so far."""
        inside, outside = [], []
        for slot, (row, step) in enumerate(zip(rows.tolist(), steps.tolist())):
            scan = self._caught_up(row, step, answers)
            if scan.literal is not None and scan.literal.values is not None:
                inside.append((slot, scan))
            elif scan.constrained:
                outside.append((slot, scan))
        for slot, scan in inside:
            allowed = self._literal_tokens(scan)
            if allowed.numel():
                best = int(logits[slot].argmax())
                kept = logits[slot, allowed].clone()
                logits[slot] = float("-inf")
                logits[slot, allowed] = kept
                self.overruled += best not in set(allowed.tolist())
        if outside:
            slots = torch.tensor([slot for slot, _ in outside])
            likeliest = logits[slots].topk(min(CHECKED_TOKENS, logits.shape[-1]), dim=-1).indices
            quoted = self.tokens.has_quote[likeliest]
            for (slot, scan), candidates, holds_quote in zip(outside, likeliest.tolist(), quoted.tolist()):
                banned = [t for t, q in zip(candidates, holds_quote) if q and not self._opens_validly(scan, t)]
                if banned:
                    self.overruled += banned[0] == candidates[0]
                    logits[slot, banned] = float("-inf")
        return logits

    @property
    def literals(self) -> int:
        """Constrained literals opened in the answers so far."""
        return sum(scan.opened for scan in self.scans.values())

    def _caught_up(self, row: int, step: int, answers: torch.Tensor) -> Scan:
        scan = self.scans.setdefault(row, Scan())
        done = self.fed.get(row, 0)
        if step > done:
            scan.feed("".join(self.tokens.texts[t] for t in answers[row, done:step].tolist()), self.table)
            self.fed[row] = step
        return scan

    def _opens_validly(self, scan: Scan, token: int) -> bool:
        key = (scan.signature(), token)
        if key not in self._valid:
            self._valid[key] = scan.copy().feed(self.tokens.texts[token], self.table)
        return self._valid[key]

    def _runs_on(self, token: int, quote_at: int) -> bool:
        after = self.tokens.texts[token][quote_at + 1: quote_at + 2]
        return after.isalnum() or after == "_"

    def _literal_tokens(self, scan: Scan) -> torch.Tensor:
        """The tokens that extend the open literal towards one of its values or close it on one."""
        key = scan.signature()
        if key in self._allowed:
            return self._allowed[key]
        literal = scan.literal
        assert literal is not None and literal.values is not None
        allowed: set[int] = set()
        for value in literal.values.with_prefix(literal.text):
            rest = value[len(literal.text):]
            for end in range(1, len(rest) + 1):
                allowed.update(self.tokens.by_text.get(rest[:end], ()))
            # A token closing the literal must not run on into a word (the contraction tokens "'s", "'t"),
            # and one that opens another literal after it is checked on that one too.
            allowed.update(t for t in self.tokens.before_quote[literal.quote].get(rest, ())
                           if not self._runs_on(t, len(rest)) and scan.copy().feed(self.tokens.texts[t], self.table))
        result = self._allowed[key] = torch.tensor(sorted(allowed), dtype=torch.long)
        return result


def invented_values(answer: str, table: ApiValues) -> list[str]:
    """The literals of a written answer that the constraint would not have let it write: each string
    it passes to a database function that the database never passes there (beside the call's other
    values). An answer decoded with the constraint has none."""
    scan, invented, off = Scan(), [], False
    for char in answer:
        before = scan.literal
        valid = scan._char(char, table)
        if before is not None and scan.literal is None and (off or not valid):
            invented.append(before.text)  # closed (or cut by a field marker) off every value
            off = False
        elif not valid:
            off = True
    if off and scan.literal is not None:
        invented.append(scan.literal.text)
    return invented


def api_constraint(api_calls: Iterable[str], tokenizer: Any) -> ApiConstraint:
    """A fresh hook for one stream of answers, from the database's api_call strings."""
    return ApiConstraint(ApiValues(api_calls), tokenizer)
