"""Tool checks over a batch of answers: the shared things they need (API databases, the BM25 index,
the sandbox's verdicts) built once, then each answer's checks."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from rlaif_code.core.artifacts import InputError
from rlaif_code.core.config import check, check_at_least
from rlaif_code.feedback.cache import JudgeCache
from rlaif_code.feedback.inputs import Sample
from rlaif_code.feedback.rubric import Answer, Question
from rlaif_code.feedback.tools import ModuleResolver, ToolContext, imported_modules, run_check

API_CHECKS = {"api_exists", "api_matches_reference", "domain_matches", "arguments_match_reference", "api_fits_task"}


@dataclass
class ToolsConfig:
    # The interpreter whose installed modules decide `imports_resolve`; None: this one.
    python_executable: str | None = None
    fit_top_k: int = 5  # api_fits_task: the called API must be among BM25's top k for the instruction
    exec_env: str | None = None  # executes: exec env dir; None: $RLAIF_EXEC_ENV, else ~/.cache/rlaif-code/exec-env
    exec_mode: Literal["hermetic", "real"] = "hermetic"  # executes: stand-in models, or the local HF cache
    exec_workers: int = 2  # executes: snippets run in parallel
    exec_timeout: float = 60.0  # executes: wall-clock seconds per snippet (each imports torch afresh)

    def __post_init__(self) -> None:
        check_at_least(self, 1, "fit_top_k", "exec_workers")
        check(self.exec_timeout > 0, "exec_timeout", f"must be positive, got {self.exec_timeout!r}")


def matchers_for(samples: list[Sample], rubric_checks: set[str], data: str | None,
                 api_db: str | None = None) -> dict[str, Any]:
    """One AstMatcher per hub the samples use, if any question needs the API database (`api_db`: a user's
    database, which replaces every hub's)."""
    if not rubric_checks & API_CHECKS:
        return {}
    hubs = sorted({str(s.reference.get("hub") or "") for s in samples})
    if "" in hubs:
        raise InputError("a data row has no 'hub'; API checks need it to pick the API database")
    return {hub: _matcher(hub, data, api_db) for hub in hubs}


@lru_cache(maxsize=8)
def _matcher(hub: str, data: str | None, api_db: str | None = None) -> Any:
    # built once per process: PPO's online feedback reward checks every step's rollouts
    from rlaif_code.data.apibench import api_database
    from rlaif_code.data.ast_match import AstMatcher

    return AstMatcher(api_database(data, hub, api_db), hub)


def task_fit(matchers: dict[str, Any], top_k: int) -> dict[str, Any]:
    """hub -> (instruction, API index) -> whether BM25 over the hub's database ranks it in the top k."""
    from rlaif_code.data.prompts import BM25Retriever

    out = {}
    for hub, matcher in matchers.items():
        retrieve = lru_cache(maxsize=None)(lambda text, r=BM25Retriever(matcher.api_database):
                                           frozenset(r.top_k_indices(text, top_k)))
        out[hub] = lambda instruction, index, retrieve=retrieve: index in retrieve(instruction)
    return out


def tool_contexts(samples: list[Sample], questions: list[Question], data: str | None, tools: ToolsConfig,
                  cache: JudgeCache | None, api_db: str | None = None) -> tuple[list[ToolContext], dict[str, Any]]:
    """One context per sample, with what `questions`' checks need computed for all samples at once
    (`cache`: where `executes` keeps its verdicts; needed only when a question uses it; `api_db`: a user's
    API database, for the API checks and the ids hermetic execution knows)."""
    checks = {q.by for q in questions}
    matchers = matchers_for(samples, checks, data, api_db)
    fits = task_fit(matchers, tools.fit_top_k) if "api_fits_task" in checks else {}
    resolver = ModuleResolver(tools.python_executable)
    contexts = [ToolContext(text=s.row["text"], fields=s.fields, reference=s.reference,
                            matcher=matchers.get(str(s.reference.get("hub"))), resolver=resolver,
                            fits_task=fits.get(str(s.reference.get("hub"))))
                for s in samples]
    if "imports_resolve" in checks:  # one lookup (one subprocess at most) for every name
        resolver.prefetch(name for ctx in contexts for name in imported_modules(ctx.code))
    stats: dict[str, Any] = {}
    executes = [q for q in questions if q.by == "executes"]
    if executes:
        from rlaif_code.feedback.executes import snippet_verdicts
        from rlaif_code.sandbox.verdicts import ExecSettings

        settings = ExecSettings(tier="run", mode=tools.exec_mode, workers=tools.exec_workers, env=tools.exec_env,
                                timeout=tools.exec_timeout, data=data, api_db=api_db)
        if cache is None:
            raise ValueError("the executes check keeps its verdicts in the judge cache: pass one")
        verdicts, stats = snippet_verdicts([ctx.code for ctx in contexts], settings, cache, executes[0].id)
        for ctx in contexts:
            ctx.verdicts = verdicts
    return contexts, stats


def tool_answers(ctx: ToolContext, questions: list[Question]) -> dict[str, Answer]:
    out = {}
    for q in questions:
        answer, detail = run_check(q.by, ctx)
        out[q.id] = Answer(answer=answer, p_yes=None, by=f"tool:{q.by}", detail=detail)  # type: ignore[arg-type]
    return out
