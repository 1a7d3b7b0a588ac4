"""Tool checks: rubric questions that need no LLM because a program can verify them.

Each check reads one answer (its parsed fields and raw text) and the example's
reference, and says yes or no, with a short reason when it says no. Checks are
registered in `TOOL_CHECKS`; a rubric question names one in its `by` field.

| check | yes when |
| --- | --- |
| syntax | the code parses with Python's own parser (`ast.parse`) |
| undefined_names | pyflakes finds no undefined name in the code |
| imports_resolve | every imported top-level module is found in the evaluation environment |
|  | (`importlib.util.find_spec`), and no module is used without being imported |
| api_exists | the api_call matches some API of the hub's database (Gorilla's AST matching: not a hallucination) |
| ids_in_database | every string the api_call and code pass to a database function (model id, repo, task) is |
|  | one the database passes it, beside the call's other values (`sample/constrained.py`'s rule) |
| api_matches_reference | the api_call is the example's reference API, name and required arguments (`AstResult.exact`) |
| domain_matches | the API the call matches in the database has the reference API's domain (Gorilla's "correct") |
| arguments_match_reference | every argument value of the reference api_call appears in the answer's call, and no |
|  | keyword the reference names has another value there (model id, repo, `pretrained`, ...) |
| answer_complete | all five fields are present and non-empty (an answer cut after its api_call fails) |
| api_fits_task | reference-free: the called API is among the `fit_top_k` APIs that BM25 over the API |
|  | database ranks highest for the instruction (for users' data without reference answers) |
| executes | the code runs to the end in the sandbox (hermetic hub mode by default): the evaluation's |
|  | executability, judged by the same code (`sandbox.verdicts`); the stage runs each distinct |
|  | snippet once, in parallel workers, and caches its verdict with the judge cache |

Generated code is never imported or run: imports are resolved by module name only,
top-level names only, since `find_spec("a.b")` would import `a`. With
`python_executable` set, names are resolved in that interpreter (the environment the
code is evaluated in, e.g. the one `rlaif exec-env` builds), in one subprocess call.

A check that cannot decide (pyflakes on code that does not parse) answers
`unparseable`: the question is then left out of the score rather than counted twice
against a syntax error. Code-reading checks answer no when the answer has no code.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterable

from rlaif_code.core.memo import once_per_object
from rlaif_code.core.registry import Registry
from rlaif_code.data.ast_match import AstMatcher, AstResult
from rlaif_code.data.parse import FIELDS
from rlaif_code.sample.constrained import ApiValues, invented_values

ToolCheck = Callable[["ToolContext"], tuple[str, str | None]]

TOOL_CHECKS: Registry[ToolCheck] = Registry("tool check")

# Conventional aliases: `np.array(...)` with no import is a missing `import numpy as np`.
MODULE_ALIASES = {"np": "numpy", "pd": "pandas", "plt": "matplotlib", "tf": "tensorflow", "hub": "tensorflow_hub",
                  "F": "torch", "nn": "torch"}

_FENCE_RE = re.compile(r"^\s*```[\w+-]*\s*\n?|\n?\s*```\s*$")
_IMPORT_LINE_RE = re.compile(r"^\s*(?:from\s+([A-Za-z_][\w.]*)\s+import\b|import\s+([A-Za-z_][\w., ]*))", re.M)


def clean_code(code: str) -> str:
    """The answer's code without Markdown fences."""
    return _FENCE_RE.sub("", code or "").strip("\n")


class ModuleResolver:
    """Which top-level module names the evaluation environment can import, without importing them."""

    def __init__(self, python_executable: str | None = None) -> None:
        self.python_executable = python_executable
        self._known: dict[str, bool] = {}

    def prefetch(self, names: Iterable[str]) -> None:
        wanted = sorted({n for n in names if n.isidentifier()} - set(self._known))
        if not wanted:
            return
        if self.python_executable is None:
            import importlib.util

            for name in wanted:
                try:
                    self._known[name] = importlib.util.find_spec(name) is not None
                except (ImportError, ValueError):
                    self._known[name] = False
            return
        script = ("import importlib.util, json, sys\n"
                  "def found(n):\n"
                  "    try:\n        return importlib.util.find_spec(n) is not None\n"
                  "    except (ImportError, ValueError):\n        return False\n"
                  "print(json.dumps({n: found(n) for n in json.load(sys.stdin)}))\n")
        try:
            done = subprocess.run([self.python_executable, "-c", script], input=json.dumps(wanted),
                                  capture_output=True, text=True, timeout=120, check=True)
        except (OSError, subprocess.SubprocessError) as err:
            raise RuntimeError(f"cannot resolve module names with {self.python_executable}: {err}") from err
        self._known.update(json.loads(done.stdout))

    def exists(self, name: str) -> bool:
        if name not in self._known:
            self.prefetch([name])
        return self._known.get(name, False)


def imported_modules(code: str) -> list[str]:
    """Top-level names of absolute imports; a regex stands in when the code does not parse."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        names = []
        for match in _IMPORT_LINE_RE.finditer(code):
            if match.group(1):
                names.append(match.group(1).split(".")[0])
            else:
                for part in match.group(2).split(","):
                    part = part.strip().split(" ")[0]
                    if part:
                        names.append(part.split(".")[0])
        return list(dict.fromkeys(names))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return list(dict.fromkeys(names))


def undefined_names(code: str) -> list[str] | None:
    """Names pyflakes reports as undefined, or None when the code does not parse."""
    from pyflakes import checker, messages

    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    found = checker.Checker(tree, filename="<answer>").messages
    undefined = (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport)
    return list(dict.fromkeys(str(m.message_args[0]) for m in found if isinstance(m, undefined)))


@dataclass
class ToolContext:
    """What the tool checks see of one answer."""

    text: str  # the answer after ###Output:
    fields: dict[str, str]  # parsed domain, api_call, provider, explanation, code
    reference: dict[str, Any]  # the example: reference_api, domain, hub, instruction
    matcher: AstMatcher | None
    resolver: ModuleResolver = field(default_factory=ModuleResolver)
    fits_task: Callable[[str, int], bool] | None = None  # (instruction, API index) -> in BM25's top k
    verdicts: dict[str, Any] | None = None  # code -> sandbox.tiers.SnippetVerdict, run by the stage beforehand

    @cached_property
    def code(self) -> str:
        return clean_code(self.fields.get("code", ""))

    @cached_property
    def ast_result(self) -> AstResult:
        if self.matcher is None:
            raise RuntimeError("API checks need the hub's API database (no matcher was given)")
        return self.matcher.evaluate(self.text, self.reference.get("reference_api") or {})


@TOOL_CHECKS.register("syntax")
def check_syntax(ctx: ToolContext) -> tuple[str, str | None]:
    if not ctx.code.strip():
        return "no", "no code"
    try:
        ast.parse(ctx.code)
    except SyntaxError as err:
        return "no", f"line {err.lineno}: {err.msg}"
    except ValueError as err:  # e.g. a null byte
        return "no", str(err)
    return "yes", None


@TOOL_CHECKS.register("undefined_names")
def check_undefined_names(ctx: ToolContext) -> tuple[str, str | None]:
    if not ctx.code.strip():
        return "no", "no code"
    names = undefined_names(ctx.code)
    if names is None:
        return "unparseable", "the code does not parse"
    if names:
        return "no", "undefined: " + ", ".join(names)
    return "yes", None


@TOOL_CHECKS.register("imports_resolve")
def check_imports_resolve(ctx: ToolContext) -> tuple[str, str | None]:
    if not ctx.code.strip():
        return "no", "no code"
    imported = imported_modules(ctx.code)
    ctx.resolver.prefetch(imported)
    missing = [name for name in imported if not ctx.resolver.exists(name)]
    if missing:
        return "no", "not installed: " + ", ".join(missing)
    # A module used but never imported is an import error too, one pyflakes sees as
    # an undefined name.
    unimported = []
    for name in undefined_names(ctx.code) or []:
        if name in MODULE_ALIASES or ctx.resolver.exists(name):
            unimported.append(name)
    if unimported:
        return "no", "used without import: " + ", ".join(unimported)
    return "yes", None


@TOOL_CHECKS.register("api_exists")
def check_api_exists(ctx: ToolContext) -> tuple[str, str | None]:
    result = ctx.ast_result
    if result.matched_index is None:
        return "no", ("no api_call" if result.api_call is None else "matches no API in the database")
    return "yes", None


@once_per_object
def _database_values(matcher: AstMatcher) -> ApiValues:
    return ApiValues(api.get("api_call") or "" for api in matcher.api_database)


@TOOL_CHECKS.register("ids_in_database")
def check_ids_in_database(ctx: ToolContext) -> tuple[str, str | None]:
    # Stricter than api_exists: Gorilla's AST match takes 'wide_resnet50' for 'wide_resnet50_2' (a
    # substring), and a real task beside a real model of another task for an API.
    if ctx.matcher is None:
        raise RuntimeError("API checks need the hub's API database (no matcher was given)")
    if not (ctx.fields.get("api_call") or ctx.code).strip():
        return "no", "no api_call and no code"
    invented = invented_values(ctx.text, _database_values(ctx.matcher))
    if invented:
        return "no", "not passed so by any database API: " + ", ".join(repr(v) for v in invented)
    return "yes", None


@TOOL_CHECKS.register("api_matches_reference")
def check_api_matches_reference(ctx: ToolContext) -> tuple[str, str | None]:
    if ctx.ast_result.exact:
        return "yes", None
    return "no", f"reference: {(ctx.reference.get('reference_api') or {}).get('api_call', '')}"


@TOOL_CHECKS.register("domain_matches")
def check_domain_matches(ctx: ToolContext) -> tuple[str, str | None]:
    # Gorilla's "correct": the API the call matches in the database has the reference's domain.
    result = ctx.ast_result
    if result.outcome == "correct":
        return "yes", None
    if result.matched_index is None:
        return "no", "no api_call" if result.api_call is None else "matches no API in the database"
    matched = ctx.matcher.api_database[result.matched_index].get("domain") if ctx.matcher else None
    return "no", f"calls a {matched} API; the task needs {(ctx.reference.get('reference_api') or {}).get('domain')}"


def _literal(node: ast.AST) -> str:
    """An argument's value, quotes and spacing normalised: 'x' and "x" are the same string."""
    try:
        return repr(ast.literal_eval(node))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return ast.unparse(node)


def call_arguments(api_call: str) -> tuple[list[str], dict[str, str]] | None:
    """(positional values, keyword -> value) of the outermost call in `api_call` (an expression or
    an assignment such as `model = torch.hub.load(...)`), or None."""
    try:
        tree = ast.parse(api_call.strip())
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    call = next((node for node in ast.walk(tree) if isinstance(node, ast.Call)), None)
    if call is None:
        return None
    keywords = {kw.arg: _literal(kw.value) for kw in call.keywords if kw.arg is not None}
    return [_literal(arg) for arg in call.args], keywords


@TOOL_CHECKS.register("arguments_match_reference")
def check_arguments_match_reference(ctx: ToolContext) -> tuple[str, str | None]:
    # Values are compared wherever they stand: torch.hub.load('pytorch/vision', 'resnet50') and
    # torch.hub.load(repo_or_dir='pytorch/vision', model='resnet50') pass the same arguments.
    reference = call_arguments(str((ctx.reference.get("reference_api") or {}).get("api_call") or ""))
    if reference is None:
        return "unparseable", "the reference api_call does not parse as a call"
    answer_call = ctx.ast_result.api_call
    answer = call_arguments(answer_call) if answer_call else None
    if answer is None:
        return "no", "no api_call" if not answer_call else "the api_call does not parse as a call"
    ref_positional, ref_keywords = reference
    positional, keywords = answer
    values = positional + list(keywords.values())
    missing = [v for v in ref_positional + list(ref_keywords.values()) if v not in values]
    differing = [k for k, v in ref_keywords.items() if k in keywords and keywords[k] != v]
    if missing or differing:
        return "no", "; ".join(filter(None, [missing and "missing " + ", ".join(missing),
                                             differing and "other value for " + ", ".join(differing)]))
    return "yes", None


@TOOL_CHECKS.register("answer_complete")
def check_answer_complete(ctx: ToolContext) -> tuple[str, str | None]:
    missing = [name for name in FIELDS if not (ctx.fields.get(name) or "").strip()]
    if not ctx.code.strip() and "code" not in missing:
        missing.append("code")
    return ("no", "missing: " + ", ".join(missing)) if missing else ("yes", None)


@TOOL_CHECKS.register("api_fits_task")
def check_api_fits_task(ctx: ToolContext) -> tuple[str, str | None]:
    if ctx.fits_task is None:
        raise RuntimeError("api_fits_task needs the retriever over the hub's API database (none was given)")
    index = ctx.ast_result.matched_index
    if index is None:
        return "no", "calls no API of the database"
    if ctx.fits_task(str(ctx.reference.get("instruction") or ""), index):
        return "yes", None
    return "no", "not among the APIs retrieved for the instruction"


@TOOL_CHECKS.register("executes")
def check_executes(ctx: ToolContext) -> tuple[str, str | None]:
    if not ctx.code.strip():
        return "no", "no code"
    if ctx.verdicts is None or ctx.code not in ctx.verdicts:
        raise RuntimeError("executes needs the sandbox's verdicts, run before the checks (feedback stage)")
    verdict = ctx.verdicts[ctx.code]
    return ("yes", None) if verdict.run else ("no", verdict.run_error or verdict.run_status or "did not run")


def run_check(name: str, ctx: ToolContext) -> tuple[str, str | None]:
    return TOOL_CHECKS.get(name)(ctx)
