"""Executability tiers of a generated snippet: parse, static, run.

* `parse`: Python's own parser accepts it.
* `static`: it parses, pyflakes finds no undefined name, and every import resolves in
  the exec env: `import a.b` needs module `a.b`, `from m import n` needs module `m`
  with an attribute or submodule `n`. Resolution is asked of the exec env's
  interpreter inside the sandbox (one probe for all snippets); nothing is imported
  in our process.
* `run`: it parses and runs to its end in the sandbox without an exception. The run
  tier does not require the static one: an undefined name on a branch never taken
  does not stop a run.

A failure whose cause is a module the exec env lacks (a ModuleNotFoundError at run
time, an unresolvable top-level module statically) is counted as `missing_package`,
so a report can tell the environment's gaps from the code's errors.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Sequence

from rlaif_code.sandbox.runner import RunResult, Sandbox

Tier = Literal["parse", "static", "run"]
TIERS: tuple[Tier, ...] = ("parse", "static", "run")

_FENCE = re.compile(r"^\s*```[\w+-]*\s*\n(.*?)\n?\s*```\s*$", re.S)


def extract_code(text: str | None) -> str:
    """The code of an answer's code field, without a surrounding Markdown fence."""
    code = (text or "").strip("\n")
    match = _FENCE.match(code)
    return match.group(1) if match else code


def tiers_up_to(tier: Tier) -> tuple[Tier, ...]:
    return TIERS[: TIERS.index(tier) + 1]


@dataclass
class SnippetVerdict:
    parse: bool
    parse_error: str | None = None
    static: bool | None = None
    static_problems: list[str] = field(default_factory=list)
    static_missing: list[str] = field(default_factory=list)  # top-level modules the env lacks
    run: bool | None = None
    run_status: str | None = None
    run_error: str | None = None
    run_missing: str | None = None  # top-level module of a ModuleNotFoundError
    duration: float | None = None
    hub_calls: list[Any] = field(default_factory=list)
    stand_ins: list[Any] = field(default_factory=list)  # hermetic inputs stood in for missing ones (RunResult's)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_code(code: str) -> tuple[ast.Module | None, str | None]:
    if not code.strip():
        return None, "empty code"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences etc.
            return ast.parse(code), None
    except (SyntaxError, ValueError) as err:
        return None, f"{type(err).__name__}: {err}"


def undefined_names(tree: ast.Module, filename: str = "snippet.py") -> list[str]:
    from pyflakes import checker, messages

    wanted = (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport)
    found = checker.Checker(tree, filename=filename)
    return sorted({m.message % m.message_args for m in found.messages if isinstance(m, wanted)})


@dataclass
class ImportNeeds:
    modules: set[str] = field(default_factory=set)
    names: set[tuple[str, str]] = field(default_factory=set)
    relative: list[str] = field(default_factory=list)


def import_needs(tree: ast.Module) -> ImportNeeds:
    needs = ImportNeeds()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                needs.modules.update(".".join(parts[: i + 1]) for i in range(len(parts)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                needs.relative.append("." * node.level + (node.module or ""))
                continue
            if not node.module:
                continue
            parts = node.module.split(".")
            needs.modules.update(".".join(parts[: i + 1]) for i in range(len(parts)))
            for alias in node.names:
                if alias.name != "*":
                    needs.names.add((node.module, alias.name))
    return needs


class ExecutabilityChecker:
    """Judges snippets tier by tier with one sandbox (hermetic or real mode)."""

    def __init__(self, sandbox: Sandbox, *, workers: int = 2) -> None:
        self.sandbox = sandbox
        self.workers = workers
        self.names_checked = True  # False when the probe could only check modules

    def check(self, codes: Sequence[str], tier: Tier = "run",
              progress: Callable[[int, RunResult], None] | None = None) -> list[SnippetVerdict]:
        trees: list[ast.Module | None] = []
        verdicts: list[SnippetVerdict] = []
        for code in codes:
            tree, error = parse_code(code)
            trees.append(tree)
            verdicts.append(SnippetVerdict(parse=tree is not None, parse_error=error))
        if tier in ("static", "run"):
            self._static(trees, verdicts)
        if tier == "run":
            runnable = [i for i, tree in enumerate(trees) if tree is not None]
            results = self.sandbox.run_many([codes[i] for i in runnable], workers=self.workers,
                                            progress=None if progress is None else
                                            (lambda k, r: progress(runnable[k], r)))
            for index, result in zip(runnable, results):
                verdict = verdicts[index]
                verdict.run = result.ok
                verdict.run_status = result.status
                verdict.run_error = None if result.ok else result.short()
                verdict.run_missing = result.missing_module
                verdict.duration = result.duration
                verdict.hub_calls = result.hub_calls
                verdict.stand_ins = result.stand_ins
            for verdict in verdicts:
                if not verdict.parse:
                    verdict.run, verdict.run_status = False, "parse_error"
        return verdicts

    def _static(self, trees: list[ast.Module | None], verdicts: list[SnippetVerdict]) -> None:
        needs = [import_needs(tree) if tree is not None else ImportNeeds() for tree in trees]
        modules = set().union(*(n.modules for n in needs)) if needs else set()
        names = set().union(*(n.names for n in needs)) if needs else set()
        resolved = {"modules": {}, "names": {}}
        self.names_checked = True
        if modules:
            try:
                resolved = self.sandbox.probe_imports(modules, names)
            except RuntimeError:
                # Importing some package to look a name up hung or crashed the probe: fall
                # back to modules only (find_spec) and let names pass rather than fail all.
                resolved = self.sandbox.probe_imports(modules, ())
                resolved["names"] = {f"{m}:{n}": True for m, n in names}
                self.names_checked = False
        for tree, need, verdict in zip(trees, needs, verdicts):
            if tree is None:
                verdict.static = False
                continue
            problems = [f"undefined name: {p}" for p in undefined_names(tree)]
            problems += [f"relative import: {r}" for r in need.relative]
            missing_top = sorted({m for m in need.modules if "." not in m and not resolved["modules"].get(m)})
            for module in sorted(need.modules):
                if not resolved["modules"].get(module) and module.split(".")[0] not in missing_top:
                    problems.append(f"module not found: {module}")
            problems += [f"module not found (not installed): {m}" for m in missing_top]
            for module, name in sorted(need.names):
                if resolved["modules"].get(module) and not resolved["names"].get(f"{module}:{name}"):
                    problems.append(f"cannot import name {name} from {module}")
            verdict.static = not problems
            verdict.static_problems = problems
            verdict.static_missing = missing_top


def summarize(verdicts: Sequence[SnippetVerdict], tier: Tier) -> dict[str, Any]:
    """Rates per tier over all snippets, and how many failures were missing packages."""
    n = len(verdicts)
    out: dict[str, Any] = {"n": n}
    for name in tiers_up_to(tier):
        passed = sum(bool(getattr(v, name)) for v in verdicts)
        out[name] = passed / n if n else 0.0
    if tier in ("static", "run"):
        failed = [v for v in verdicts if v.parse and not v.static]
        out["static_failures_missing_package"] = sum(bool(v.static_missing) for v in failed)
        out["static_missing_packages"] = dict(Counter(m for v in failed for m in v.static_missing).most_common())
    if tier == "run":
        failed = [v for v in verdicts if not v.run]
        out["run_failures"] = len(failed)
        out["run_failures_missing_package"] = sum(v.run_missing is not None for v in failed)
        out["run_missing_packages"] = dict(Counter(v.run_missing for v in failed if v.run_missing).most_common())
        out["run_failure_kinds"] = dict(Counter(_failure_kind(v) for v in failed).most_common())
        # passes that read at least one stand-in input (hermetic mode: a made-up file, a URL answered locally)
        out["run_passes_with_stand_in_inputs"] = sum(bool(v.stand_ins) for v in verdicts if v.run)
    return out


def _failure_kind(verdict: SnippetVerdict) -> str:
    if verdict.run_status != "exception":
        return verdict.run_status or "unknown"
    error = verdict.run_error or ""
    return error.split(":", 1)[0] if error else "exception"
