"""The report's numbers: eval results as table rows, RLAIF - SFT deltas with a paired
bootstrap interval, and the rows rendered as Markdown or HTML.

A table is a list of rows of strings, the first row its header; a table with no row
under the header renders as "(nothing to show)".
"""

from __future__ import annotations

import html
import random
from collections import Counter
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import InputError, read_json, read_jsonl

# Metric name -> (per-item key in eval results, how to turn the per-item value into a number).
PER_ITEM = {
    "accuracy": ("outcome", lambda v: float(v == "correct")),
    "hallucination": ("outcome", lambda v: float(v == "hallucination")),
    "exact_match": ("exact_match", float),
    "rouge": ("rouge", float),
    "codebleu": ("codebleu", float),
    "executability": ("executability", float),
}
LOWER_IS_BETTER = {"hallucination"}


def _per_item_values(result: dict[str, Any], metric: str) -> dict[str, float] | None:
    key, convert = PER_ITEM[metric]
    items = result.get("items") or []
    if not items or key not in items[0]:
        return None
    # Several answers per example are averaged so both sides pair on the example.
    sums: dict[str, list[float]] = {}
    for item in items:
        sums.setdefault(item["example_id"], []).append(convert(item[key]))
    return {eid: sum(v) / len(v) for eid, v in sums.items()}


def paired_bootstrap(a: dict[str, float], b: dict[str, float], n_boot: int,
                     seed: int) -> tuple[float, float, float, int]:
    """Mean of b - a over shared items, with a percentile bootstrap 95% interval."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise InputError("the two evaluations share no eval item: cannot compare them")
    diffs = [b[k] - a[k] for k in shared]
    n = len(diffs)
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    low, high = means[int(0.025 * (n_boot - 1))], means[int(0.975 * (n_boot - 1))]
    return sum(diffs) / n, low, high, n


def fmt(value: float | None) -> str:
    """A fraction as a percentage with two decimals."""
    return "–" if value is None else f"{100 * value:.2f}"


def num(value: Any) -> str:
    """Any stage metric, short: floats to four significant digits, large ones whole with separators
    (a peak memory of 19,512 MiB, not 1.951e+04)."""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return "–" if value is None else str(value)


def load_evals(run_dir: Path) -> dict[str, dict[str, Any]]:
    evals = {}
    for path in sorted((run_dir / "eval").glob("*.json")):
        evals[path.stem] = read_json(path)
    return evals


def ordered(evals: dict[str, dict[str, Any]]) -> list[str]:
    """The rows' order in every table: SFT, the baselines above the method they frame, then the rest."""
    first = ("sft", "best_of_4", "best_of_8", "rft", "rlaif")
    return [n for n in first if n in evals] + [n for n in evals if n not in first]


def main_table(evals: dict[str, dict[str, Any]], metrics: list[str]) -> list[list[str]]:
    rows = [["model", "n"] + metrics]
    for name in ordered(evals):
        result = evals[name]
        rows.append([result.get("label") or name, str(result.get("n", ""))] + [fmt(result.get(m)) for m in metrics])
    return rows


def delta_table(evals: dict[str, dict[str, Any]], metrics: list[str], n_boot: int, seed: int) -> list[list[str]]:
    rows = [["metric", "SFT", "RLAIF", "RLAIF - SFT", "95% CI", "items"]]
    if "sft" not in evals or "rlaif" not in evals:
        return rows
    for metric in metrics:
        a, b = _per_item_values(evals["sft"], metric), _per_item_values(evals["rlaif"], metric)
        if a is None or b is None:
            continue
        mean, low, high, n = paired_bootstrap(a, b, n_boot, seed)
        rows.append([metric, fmt(evals["sft"].get(metric)), fmt(evals["rlaif"].get(metric)),
                     f"{100 * mean:+.2f}", f"[{100 * low:+.2f}, {100 * high:+.2f}]", str(n)])
    return rows


def delta_sentence(rows: list[list[str]]) -> str:
    """One sentence on a delta table: which metrics moved by more than their interval (it excludes 0)."""
    if len(rows) < 2:
        return "No RLAIF row to compare with SFT in this run."
    moved = []
    for metric, _sft, _rlaif, delta, interval, _n in rows[1:]:
        low, high = (float(x) for x in interval.strip("[]").split(","))
        if low > 0 or high < 0:
            better = (float(delta) < 0) == (metric in LOWER_IS_BETTER)
            moved.append(f"{metric} {delta} ({'better' if better else 'worse'})")
    n = rows[1][-1]
    if not moved:
        return (f"RLAIF minus SFT on the same {n} items; no change is larger than its 95% interval "
                "(every interval contains 0).")
    return f"RLAIF minus SFT on the same {n} items; larger than the 95% interval: {', '.join(moved)}."


def versus_sft_table(evals: dict[str, dict[str, Any]], metrics: list[str], n_boot: int,
                     seed: int) -> list[list[str]]:
    """Every row but SFT and the control against SFT on the same items: delta [95% CI] per metric."""
    rows = [["model"] + [f"{m} - SFT [95% CI]" for m in metrics]]
    if "sft" not in evals:
        return rows
    for name, result in evals.items():
        if name in ("sft", "reference"):
            continue
        cells = []
        for metric in metrics:
            a, b = _per_item_values(evals["sft"], metric), _per_item_values(result, metric)
            if a is None or b is None or not set(a) & set(b):
                cells.append("–")
                continue
            mean, low, high, _ = paired_bootstrap(a, b, n_boot, seed)
            cells.append(f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]")
        rows.append([result.get("label") or name] + cells)
    return rows


def domain_table(evals: dict[str, dict[str, Any]]) -> list[list[str]]:
    names = [n for n in ("sft", "rlaif") if n in evals and evals[n].get("per_domain")]
    if not names:
        return [[]]
    domains = sorted(set().union(*(evals[n]["per_domain"] for n in names)))
    rows = [["domain", "n"] + [f"{n.upper()} accuracy" for n in names] + [f"{n.upper()} exact" for n in names]]
    for domain in domains:
        cells = [domain, str(max(evals[n]["per_domain"].get(domain, {}).get("n", 0) for n in names))]
        cells += [fmt(evals[n]["per_domain"].get(domain, {}).get("accuracy")) for n in names]
        cells += [fmt(evals[n]["per_domain"].get(domain, {}).get("exact_match")) for n in names]
        rows.append(cells)
    return rows


def stages_table(manifest: dict[str, Any]) -> list[list[str]]:
    stages = manifest.get("stages", {})
    # peak_rss_mib: absent from manifests written before it was recorded
    return [["stage", "status", "seconds", "peak memory (MiB)"]] + [
        [s, str(v.get("status")), num(v.get("seconds")), num(v.get("peak_rss_mib"))] for s, v in stages.items()]


def sample_answers(run_dir: Path, evals: dict[str, dict[str, Any]], count: int, seed: int) -> list[dict[str, str]]:
    sides = {}
    for name in ("sft", "rlaif"):
        path = run_dir / "samples" / f"eval_{name}" / "samples.jsonl"
        if path.is_file():
            sides[name] = {r["example_id"]: r for r in read_jsonl(path, tolerate_torn_tail=True)}
    if len(sides) < 2:
        return []
    shared = sorted(set(sides["sft"]) & set(sides["rlaif"]))
    picked = random.Random(seed).sample(shared, min(count, len(shared)))
    return [{"example_id": eid, "prompt": sides["sft"][eid].get("prompt", ""), "sft": sides["sft"][eid]["text"],
             "rlaif": sides["rlaif"][eid]["text"]} for eid in picked]


def markdown_table(rows: list[list[str]]) -> str:
    if len(rows) <= 1:
        return "_(nothing to show)_\n"
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n"


def html_table(rows: list[list[str]]) -> str:
    if len(rows) <= 1:
        return "<p><em>(nothing to show)</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# (cause, what it means), checked in order against the evaluator's per-item `exec_failure` text
_FAILURE_CAUSES = (
    ("no code", lambda t: t.startswith("parse: empty code")),
    ("does not parse", lambda t: t.startswith("parse:")),
    ("package not in the exec env", lambda t: "ModuleNotFoundError" in t),
    ("unknown model id", lambda t: "is not a valid model identifier" in t or "not in the API database" in t),
    ("unknown pipeline task", lambda t: "Unknown task" in t),
    ("library version drift", lambda t: "has been removed from" in t or t.startswith("run: ImportError")),
    ("undefined name (no import or definition)", lambda t: t.startswith("run: NameError")),
    ("timed out", lambda t: t.startswith("run: timeout")),
    ("killed at a limit", lambda t: t.startswith("run: killed")),
)


def failure_cause(failure: str) -> str:
    """The reason one snippet did not run, as a short category; else its exception's name."""
    for cause, matches in _FAILURE_CAUSES:
        if matches(failure):
            return cause
    exception = failure.removeprefix("run: ").split(":", 1)[0].strip()
    return f"other ({exception})" if exception.isidentifier() else "other"


def exec_failure_table(evals: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Cause x model: how many eval items' code did not run, and why (empty when no row ran code)."""
    counted = {}
    for name in ordered(evals):
        result = evals[name]
        failures = [item.get("exec_failure") for item in result.get("items") or [] if "exec_failure" in item]
        if failures:
            counted[result.get("label") or name] = Counter(failure_cause(f) for f in failures if f)
    if not counted:
        return []
    causes = sorted(set().union(*counted.values()), key=lambda c: (-sum(n[c] for n in counted.values()), c))
    rows = [["cause"] + list(counted)]
    rows += [[cause] + [str(counts[cause]) for counts in counted.values()] for cause in causes]
    return rows
