"""The `executes` check's sandbox runs: each distinct snippet once, in parallel workers, its verdict
kept in the judge cache's SQLite file, so that a killed or repeated feedback run reruns nothing."""

from __future__ import annotations

import hashlib
from typing import Any

from rlaif_code.core.artifacts import InputError
from rlaif_code.feedback.cache import JudgeCache
from rlaif_code.sandbox.env import find_exec_python
from rlaif_code.sandbox.tiers import SnippetVerdict
from rlaif_code.sandbox.verdicts import ExecSettings, executability, sandbox_version

CACHE_KIND = "exec"
CHUNK = 64  # snippets per sandbox session: what a kill can lose, against the per-session set-up


def _key(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def snippet_verdicts(codes: list[str], settings: ExecSettings, cache: JudgeCache,
                     question_id: str) -> tuple[dict[str, SnippetVerdict], dict[str, Any]]:
    """code -> verdict for every distinct non-empty snippet in `codes`; (verdicts, counts)."""
    try:
        interpreter = find_exec_python(settings.env)
    except InputError as err:
        raise InputError(f"rubric question '{question_id}' uses the executes check, which runs the code in the "
                         f"sandbox: {err} (or set feedback.tools.exec_env)") from err
    # A verdict depends on the interpreter, the settings and the sandbox's own code, so they are the cache key.
    model = f"{settings.tier}|{settings.mode}|{interpreter}|{settings.timeout}|{settings.data}"
    if settings.api_db:
        model += f"|{settings.api_db}"
    model += f"|sandbox {sandbox_version(interpreter)}"
    keys = {code: _key(code) for code in sorted({code for code in codes if code.strip()})}
    found = cache.get_many(CACHE_KIND, model, list(keys.values()))
    verdicts = {code: SnippetVerdict(**found[key]) for code, key in keys.items() if key in found}
    todo = [code for code in keys if code not in verdicts]
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start:start + CHUNK]
        fresh, _summary = executability(chunk, settings, python=interpreter)
        for code, verdict in zip(chunk, fresh):
            cache.put(CACHE_KIND, model, keys[code], verdict.to_dict())
            verdicts[code] = verdict
    return verdicts, {"exec_snippets": len(keys), "exec_snippets_run": len(todo),
                      "exec_pass_rate": (sum(bool(v.run) for v in verdicts.values()) / len(verdicts)
                                         if verdicts else None)}
