"""The `exec` metric of `rlaif eval`: executability of the answers' code, per tier.

Each answer's code field is judged `parse` / `static` / `run` (see
rlaif_code.sandbox.tiers) in the sandbox, in the exec env made by `rlaif exec-env`,
and so is the reference `code` of the same eval items: the control, the ceiling of
what the environment allows. `executability` is the run-tier rate.

Each snippet is a fresh interpreter that imports its libraries itself (torch plus
transformers: 3-6 CPU seconds), so `exec_timeout` (wall clock) must leave room for
that on a busy machine: a run cut by the timeout counts as a failure (60-120 s is safe
where 20 s is not). Without bubblewrap or unshare the sandbox refuses to run; the only
opt-out is RLAIF_EXEC_ALLOW_UNSANDBOXED=1 in the environment.

What hermetic mode (the default) proves, and what it cannot
------------------------------------------------------------
Hermetic mode runs the snippet for real, in the exec env, with no network and no
model weights; only the model-loading entry points are intercepted (transformers'
`from_pretrained` of every model/tokenizer/processor/config class and `pipeline`,
diffusers' `from_pretrained`/`from_config`, sentence-transformers' constructors,
huggingface_hub's `hf_hub_download`/`snapshot_download`/`from_pretrained_keras`,
`torch.hub.load`, tensorflow_hub's `load`/`KerasLayer`). An id present in APIBench's
API database yields a stand-in object; an id absent from it raises the error the
real library raises for a repository that does not exist. The inputs a snippet reads
are stood in for too (rlaif_code.sandbox.hermetic.inputs and .network): a missing file
it opens is made first, of the kind its extension or reader names (an image, a
second of audio, text, a CSV, a config), and an http(s) fetch through requests, httpx
or urllib is answered in-process with such content; no socket is ever opened.

A pass proves that the snippet is valid Python, that every module and name it
imports exists in the installed library versions, that the classes and functions it
calls exist and accept the call where the call reaches the real library (anything
done *before* a model is loaded, and every call on real objects: tokenizer-free
preprocessing, PIL, numpy, pandas, torch on real tensors), that the model id it loads
is one the API database knows (so hallucinated ids and made-up torch.hub models fail),
and that the control flow runs to the end without an exception.

It cannot prove that the loaded model accepts the inputs the code gives it, that
methods called on a loaded model/tokenizer/pipeline exist or take those arguments
(the stand-in accepts any attribute, call, index and arithmetic, and iterates as a
batch of one), that outputs have the shape or meaning the code assumes, that the id
is the right model for the task, that the file or URL it reads exists or holds what
the code assumes (its stand-in is of the right kind, not the right content), or
anything else about the network (any other connection fails, as in an offline run). An id that exists on
the Hub but not in the API database counts as unknown. So a hermetic pass is
necessary, not sufficient, for the code to work with the real model: `real` mode
(models from the local Hugging Face cache, HF_HUB_OFFLINE=1) checks the rest for
users who have the weights.
"""

from __future__ import annotations

from typing import Any

from rlaif_code.evaluate.metrics import METRICS, EvalContext, EvalItem, MetricResult
from rlaif_code.sandbox.tiers import SnippetVerdict, extract_code, tiers_up_to
from rlaif_code.sandbox.verdicts import executability


@METRICS.register("exec")
def exec_metric(items: list[EvalItem], ctx: EvalContext) -> MetricResult:
    settings = ctx.exec_settings
    if settings is None:
        raise ValueError("the exec metric needs EvalContext.exec_settings")
    tier = settings.tier
    model_codes = [extract_code(item.parsed.fields["code"]) for item in items]
    # The control: each distinct eval item's reference code, judged once.
    references: dict[str, str] = {}
    for item in items:
        references.setdefault(item.example.example_id, extract_code(item.example.code))
    verdicts, model_summary = executability(model_codes, settings)
    control_verdicts, control_summary = executability(list(references.values()), settings)
    tiers = tiers_up_to(tier)
    summary: dict[str, float] = {f"exec_{t}": model_summary[t] for t in tiers}
    summary.update({f"exec_control_{t}": control_summary[t] for t in tiers})
    if tier == "run":
        summary["executability"] = model_summary["run"]
    # Share of snippets that failed only because the exec env lacks a package they import.
    missing_key = "run_failures_missing_package" if tier == "run" else "static_failures_missing_package"
    if missing_key in model_summary:
        summary["exec_missing_package"] = model_summary[missing_key] / max(1, model_summary["n"])
        summary["exec_control_missing_package"] = control_summary[missing_key] / max(1, control_summary["n"])
    per_item: dict[str, list[Any]] = {f"exec_{t}": [float(bool(getattr(v, t))) for v in verdicts] for t in tiers}
    if tier == "run":
        per_item["executability"] = per_item["exec_run"]
    per_item["exec_failure"] = [_failure(v, tier) for v in verdicts]
    control_by_id = dict(zip(references, control_verdicts))
    per_item["exec_control_pass"] = [float(bool(getattr(control_by_id[item.example.example_id], tier)))
                                     for item in items]
    details = {key: value for key, value in model_summary.items() if key not in tiers}
    control_details = {key: value for key, value in control_summary.items() if key not in tiers}
    extra = {"exec": {"tier": tier, "mode": settings.mode, "model": details, "control": control_details}}
    return MetricResult(summary, per_item, extra)


def _failure(verdict: SnippetVerdict, tier: str) -> str | None:
    if not verdict.parse:
        return f"parse: {verdict.parse_error}"
    if tier == "run":
        return None if verdict.run else f"run: {verdict.run_error}"
    if tier == "static":
        return None if verdict.static else "static: " + "; ".join(verdict.static_problems)[:300]
    return None
