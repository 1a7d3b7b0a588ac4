"""AST accuracy and hallucination with the semantics of Gorilla's `ast_eval_{hf,tf,th}.py`.

Our own implementation of what those scripts decide, quirks included, because our
figures must agree with theirs on Gorilla's own answers:

* The answer's api_call is cut out of the raw text between the first "api_call" and
  the next "api_provider": from two characters after the first ':' to the last ')'.
  With no "api_call" at all, hf and tf parse the whole text; th counts an error.
* Both sides are parsed with tree-sitter (error-tolerant, unlike `ast`).
* A database API whose first statement is a call `f(args)` matches when some subtree
  of the answer starts with the text `f` (if none does, the scripts fall through to
  the last subtree visited) and every required argument, stripped of single quotes,
  is a substring of that subtree's text. The first matching database API, in file
  order, wins. APIs with no required argument never match.
* Required arguments differ per hub: hf takes every argument (the value of keyword
  ones), tf every positional argument plus the value of `model=`, th only the values
  of arguments mentioning `repo_or_dir` or `model`.
* Outcome: hallucination when nothing matches, correct when the matched API has the
  domain of the question's reference API, else error.

A user's own database (hub `custom`) is matched by hf's rule, the strictest of the three and
the one that fits any call: every argument of the database api_call must appear in the answer's
call, positional ones as written and keyword ones by their value (quotes stripped), so
`client.get_model('resnet', version='2')` needs both 'resnet' and '2'. One thing is ours: an
API whose call takes no argument (`sdk.list_models()`) matches an answer that calls that very
function, where Gorilla's scripts would never match it. As in hf, an answer with no
`api_call` field is parsed whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

Outcome = Literal["correct", "hallucination", "error"]

_PUNCTUATION = ("(", ")", ",")


@lru_cache(maxsize=1)
def _parser():
    import tree_sitter_python
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_python.language()))


def parse_tree(code: str):
    return _parser().parse(code.encode("utf-8")).root_node


def _text(node) -> str:
    return node.text.decode("utf-8", errors="replace")


HUB_RULES = ("hf", "tf", "th", "custom")


def extract_api_call(text: str, hub: str) -> str | None:
    """The answer's api_call as Gorilla's scripts cut it; None where th would count an error."""
    pieces = text.split("api_call")
    if len(pieces) == 1:
        return None if hub == "th" else text
    segment = pieces[1].split("api_provider")[0]
    start = segment.index(":") if ":" in segment else 0
    end = segment.rindex(")") if ")" in segment else -2
    return segment[start + 2 : end + 1]


def subtrees(root) -> list[tuple[Any, str | None]]:
    """(node, text of its first child) in the scripts' stack order; leaves only at the root."""
    stack, out = [root], []
    while stack:
        node = stack.pop()
        out.append((node, _text(node.children[0]) if node.child_count > 0 else None))
        stack.extend(child for child in node.children if child.child_count != 0)
    return out


def _wants_value(hub: str, arg_text: str) -> bool | None:
    """True: take the keyword's value; False: take the whole argument; None: ignore it."""
    if hub in ("hf", "custom"):
        return True if "=" in arg_text else (None if arg_text in _PUNCTUATION else False)
    if hub == "tf":
        if "model=" in arg_text or "model =" in arg_text:
            return True
        return None if arg_text in _PUNCTUATION else False
    return True if ("repo_or_dir" in arg_text or "model" in arg_text) else None


@dataclass(frozen=True)
class ApiPattern:
    index: int  # position in the API database
    name: str  # the called function's text, e.g. "AutoModel.from_pretrained"
    args: tuple[str, ...]  # required argument texts, quotes stripped
    needs_name: bool = False  # an argument-less custom API: the answer must call this very function


def api_pattern(api_call: str, hub: str, index: int = -1) -> ApiPattern | None:
    """The matchable form of a database api_call, or None where the scripts skip the entry."""
    root = parse_tree(api_call)
    if root.child_count == 0 or root.children[0].child_count == 0:
        return None
    head = root.children[0].children[0]
    if head.child_count == 0:
        return None
    name = _text(head.children[0])
    args: list[str] = []
    if head.child_count > 1:
        for child in head.children[1].children:
            child_text = _text(child)
            wants = _wants_value(hub, child_text)
            if wants is None:
                continue
            if wants:
                if child.child_count < 3:
                    continue  # the scripts would crash here; no database entry does this
                args.append(_text(child.children[2]))
            else:
                args.append(child_text)
    if not args:
        return ApiPattern(index=index, name=name, args=(), needs_name=True) if hub == "custom" else None
    return ApiPattern(index=index, name=name, args=tuple(a.lstrip("'").rstrip("'") for a in args))


class AnswerTree:
    """An answer's api_call parsed once, ready to test against many API patterns."""

    def __init__(self, api_call: str) -> None:
        self.nodes = subtrees(parse_tree(api_call))
        self._first_by_name: dict[str, str] = {}
        for node, first in self.nodes:
            if first is not None and first not in self._first_by_name:
                self._first_by_name[first] = _text(node)
        self._fallback = _text(self.nodes[-1][0])

    def matches(self, pattern: ApiPattern) -> bool:
        if pattern.needs_name and pattern.name not in self._first_by_name:
            return False
        text = self._first_by_name.get(pattern.name, self._fallback)
        return all(arg in text for arg in pattern.args)


@dataclass
class AstResult:
    outcome: Outcome
    api_call: str | None  # what was cut out of the answer
    matched_index: int | None  # database position of the matched API
    exact: bool  # the reference API itself matches the answer


class AstMatcher:
    def __init__(self, api_database: list[dict[str, Any]], hub: str) -> None:
        if hub not in HUB_RULES:
            raise ValueError(f"unknown hub '{hub}'")
        self.hub = hub
        self.api_database = api_database
        self.patterns = [p for i, api in enumerate(api_database)
                         if (p := api_pattern(api["api_call"], hub, i)) is not None]

    def match_index(self, tree: AnswerTree) -> int | None:
        for pattern in self.patterns:
            if tree.matches(pattern):
                return pattern.index
        return None

    def reference_matches(self, tree: AnswerTree, reference_api: dict[str, Any]) -> bool:
        """Stricter than Gorilla: the answer calls the reference API itself (name and arguments)."""
        call = reference_api.get("api_call") or ""
        pattern = api_pattern(call, self.hub)
        if pattern is None:
            # No required argument to check: the called function must at least appear.
            root = parse_tree(call)
            if root.child_count == 0:
                return False
            head = root.children[0].children[0] if root.children[0].child_count else None
            name = _text(head.children[0]) if head is not None and head.child_count else _text(root)
            return any(first == name for _, first in tree.nodes)
        return tree.matches(pattern)

    def evaluate(self, text: str | None, reference_api: dict[str, Any]) -> AstResult:
        if text is None:  # a response line with no text: the scripts skip it but count it
            return AstResult("error", None, None, False)
        api_call = extract_api_call(text, self.hub)
        if api_call is None:
            return AstResult("error", None, None, False)
        tree = AnswerTree(api_call)
        index = self.match_index(tree)
        if index is None:
            return AstResult("hallucination", api_call, None, False)
        same_domain = self.api_database[index].get("domain") == reference_api.get("domain")
        exact = self.reference_matches(tree, reference_api)
        return AstResult("correct" if same_domain else "error", api_call, index, exact)
