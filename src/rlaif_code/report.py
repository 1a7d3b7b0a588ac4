"""`rlaif report RUN_DIR`: a Markdown file and one self-contained HTML file.

Reads only what the stages left in the run directory:

    eval/<name>.json       evaluate results (per-item values included); `sft` and `rlaif` are
                           compared, every other file is shown as a baseline or control
    ppo/metrics.jsonl      one row per PPO step (reward_mean, kl, ...)
    reward/stage.json      reward-model metrics (held-out accuracy, ROC-AUC)
    feedback/stage.json    label balance and per-question yes rates
    feedback/judge_check.json  judge agreement with the tools, when measured
    manifest.json          the resolved config and each stage's status

Deltas RLAIF - SFT come with a paired bootstrap 95% confidence interval over eval items.
"""

from __future__ import annotations

import base64
import html
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif_code.artifacts import InputError, atomic_write_text, read_json, read_jsonl

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


@dataclass
class ReportConfig:
    run_dir: str = ""
    out_dir: str | None = None  # default: RUN_DIR/report
    bootstrap: int = 2000
    seed: int = 0
    sample_answers: int = 3  # answers shown side by side


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


def paired_bootstrap(a: dict[str, float], b: dict[str, float], n_boot: int, seed: int) -> tuple[float, float, float, int]:
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


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def load_evals(run_dir: Path) -> dict[str, dict[str, Any]]:
    evals = {}
    for path in sorted((run_dir / "eval").glob("*.json")):
        evals[path.stem] = read_json(path)
    return evals


def main_table(evals: dict[str, dict[str, Any]], metrics: list[str]) -> list[list[str]]:
    order = [n for n in ("sft", "rlaif") if n in evals] + [n for n in evals if n not in ("sft", "rlaif")]
    rows = [["model", "n"] + metrics]
    for name in order:
        result = evals[name]
        rows.append([result.get("label") or name, str(result.get("n", ""))] + [_fmt(result.get(m)) for m in metrics])
    return rows


def delta_table(evals: dict[str, dict[str, Any]], metrics: list[str], cfg: ReportConfig) -> list[list[str]]:
    rows = [["metric", "SFT", "RLAIF", "RLAIF - SFT", "95% CI", "items"]]
    if "sft" not in evals or "rlaif" not in evals:
        return rows
    for metric in metrics:
        a, b = _per_item_values(evals["sft"], metric), _per_item_values(evals["rlaif"], metric)
        if a is None or b is None:
            continue
        mean, low, high, n = paired_bootstrap(a, b, cfg.bootstrap, cfg.seed)
        rows.append([metric, _fmt(evals["sft"].get(metric)), _fmt(evals["rlaif"].get(metric)),
                     f"{100 * mean:+.2f}", f"[{100 * low:+.2f}, {100 * high:+.2f}]", str(n)])
    return rows


def _markdown_table(rows: list[list[str]]) -> str:
    if len(rows) <= 1:
        return "_(nothing to show)_\n"
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n"


def _html_table(rows: list[list[str]]) -> str:
    if len(rows) <= 1:
        return "<p><em>(nothing to show)</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def ppo_curves(run_dir: Path) -> tuple[bytes | None, dict[str, Any]]:
    path = run_dir / "ppo" / "metrics.jsonl"
    if not path.is_file():
        return None, {}
    rows = read_jsonl(path, tolerate_torn_tail=True)
    if not rows:
        return None, {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r.get("step", i) for i, r in enumerate(rows)]
    series = [(key, label) for key, label in (("reward_mean", "reward (RM logit)"), ("kl", "KL to reference"),
                                                ("response_length", "answer length (tokens)"))
              if any(key in r for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(series)), figsize=(4.2 * max(1, len(series)), 3.2))
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, (key, label) in zip(axes, series):
        ax.plot(steps, [r.get(key) for r in rows], marker=".", linewidth=1)
        ax.set_title(label)
        ax.set_xlabel("PPO step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    first, last = rows[0], rows[-1]
    summary = {key: (first.get(key), last.get(key)) for key, _ in series}
    return buffer.getvalue(), summary


def domain_table(evals: dict[str, dict[str, Any]]) -> list[list[str]]:
    names = [n for n in ("sft", "rlaif") if n in evals and evals[n].get("per_domain")]
    if not names:
        return [[]]
    domains = sorted(set().union(*(evals[n]["per_domain"] for n in names)))
    rows = [["domain", "n"] + [f"{n} accuracy" for n in names] + [f"{n} exact" for n in names]]
    for domain in domains:
        cells = [domain, str(max(evals[n]["per_domain"].get(domain, {}).get("n", 0) for n in names))]
        cells += [_fmt(evals[n]["per_domain"].get(domain, {}).get("accuracy")) for n in names]
        cells += [_fmt(evals[n]["per_domain"].get(domain, {}).get("exact_match")) for n in names]
        rows.append(cells)
    return rows


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


def _stage_metrics(run_dir: Path, stage: str) -> dict[str, Any]:
    path = run_dir / stage / "stage.json"
    return read_json(path).get("metrics", {}) if path.is_file() else {}


def run(cfg: ReportConfig) -> dict[str, Any]:
    if not cfg.run_dir:
        raise InputError("no run directory given: rlaif report RUN_DIR")
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run directory not found: {run_dir}")
    out_dir = Path(cfg.out_dir) if cfg.out_dir else run_dir / "report"
    evals = load_evals(run_dir)
    if not evals:
        raise InputError(f"{run_dir / 'eval'}: no evaluation results (*.json) to report")
    metrics = [m for m in ("accuracy", "hallucination", "exact_match", "rouge", "codebleu", "executability")
               if any(m in r for r in evals.values())]
    table = main_table(evals, metrics)
    deltas = delta_table(evals, metrics, cfg)
    curve_png, curve_summary = ppo_curves(run_dir)
    reward = _stage_metrics(run_dir, "reward")
    feedback = _stage_metrics(run_dir, "feedback")
    judge_path = run_dir / "feedback" / "judge_check.json"
    judge = read_json(judge_path) if judge_path.is_file() else None
    domains = domain_table(evals)
    answers = sample_answers(run_dir, evals, cfg.sample_answers, cfg.seed)
    manifest_path = run_dir / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.is_file() else {}

    md = [f"# rlaif-code report: {run_dir.name}\n"]
    md.append("All figures in percent. Accuracy, hallucination: Gorilla's AST semantics; exact: the reference "
              "API itself; ROUGE: mean of R1/R2/RL/RLsum F; CodeBLEU: codebleu package (see README).\n")
    md += ["## Results\n", _markdown_table(table)]
    md += ["## RLAIF - SFT (paired bootstrap, 95% CI)\n", _markdown_table(deltas)]
    sections_html = [f"<h1>rlaif-code report: {html.escape(run_dir.name)}</h1>",
                     "<h2>Results</h2>", _html_table(table),
                     "<h2>RLAIF - SFT (paired bootstrap, 95% CI)</h2>", _html_table(deltas)]
    if curve_png:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "ppo_curves.png").write_bytes(curve_png)
        trend = ", ".join(f"{k}: {_num(a)} -> {_num(b)}" for k, (a, b) in curve_summary.items())
        md += ["## PPO\n", f"![PPO curves](ppo_curves.png)\n\nFirst -> last step: {trend}\n"]
        sections_html += ["<h2>PPO</h2>",
                          f'<img alt="PPO curves" src="data:image/png;base64,{base64.b64encode(curve_png).decode()}">',
                          f"<p>First &rarr; last step: {html.escape(trend)}</p>"]
    if reward:
        line = ", ".join(f"{k}: {_num(v)}" for k, v in reward.items() if isinstance(v, (int, float)))
        md += ["## Reward model\n", line + "\n"]
        sections_html += ["<h2>Reward model</h2>", f"<p>{html.escape(line)}</p>"]
    if feedback:
        line = ", ".join(f"{k}: {_num(v)}" for k, v in feedback.items() if isinstance(v, (int, float)))
        md += ["## AI feedback\n", line + "\n"]
        sections_html += ["<h2>AI feedback</h2>", f"<p>{html.escape(line)}</p>"]
        for key, value in feedback.items():
            if isinstance(value, dict) and value:
                rows = [["question", key]] + [[str(q), _num(v) if not isinstance(v, dict) else json.dumps(v)]
                                              for q, v in value.items()]
                md.append(_markdown_table(rows))
                sections_html.append(_html_table(rows))
    if judge:
        md += ["## Judge agreement with the tool checks\n", "```json\n" + json.dumps(judge, indent=1)[:3000] + "\n```\n"]
        sections_html += ["<h2>Judge agreement with the tool checks</h2>",
                          f"<pre>{html.escape(json.dumps(judge, indent=1)[:3000])}</pre>"]
    else:
        # Say so rather than leave the reader to wonder whether agreement was high.
        line = ("Not measured in this run" + (" (judge: tools, so the tool checks answered every question)"
                                             if feedback.get("judge") == "tools" else "")
                + ". `rlaif judge-check` measures an LLM judge against the tool checks.")
        md += ["## Judge agreement with the tool checks\n", line + "\n"]
        sections_html += ["<h2>Judge agreement with the tool checks</h2>", f"<p>{html.escape(line)}</p>"]
    if len(domains) > 1:
        md += ["## Per domain\n", _markdown_table(domains)]
        sections_html += ["<h2>Per domain</h2>", _html_table(domains)]
    if answers:
        md.append("## Sample answers (SFT vs RLAIF)\n")
        sections_html.append("<h2>Sample answers (SFT vs RLAIF)</h2>")
        for answer in answers:
            md.append(f"**{answer['example_id']}**: {answer['prompt'][:300]}\n\n| SFT | RLAIF |\n|---|---|\n"
                      f"| <pre>{html.escape(answer['sft'][:600])}</pre> | <pre>{html.escape(answer['rlaif'][:600])}</pre> |\n")
            sections_html.append(
                f"<h3>{html.escape(answer['example_id'])}</h3><p>{html.escape(answer['prompt'][:300])}</p>"
                f"<table><tr><th>SFT</th><th>RLAIF</th></tr><tr><td><pre>{html.escape(answer['sft'][:600])}</pre></td>"
                f"<td><pre>{html.escape(answer['rlaif'][:600])}</pre></td></tr></table>")
    if manifest:
        stages = manifest.get("stages", {})
        rows = [["stage", "status", "seconds"]] + [[s, str(v.get("status")), _num(v.get("seconds"))]
                                                   for s, v in stages.items()]
        md += ["## Stages\n", _markdown_table(rows)]
        sections_html += ["<h2>Stages</h2>", _html_table(rows)]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right;vertical-align:top}td:first-child,th:first-child{text-align:left}"
             "pre{white-space:pre-wrap;text-align:left;margin:0;font-size:12px}img{max-width:100%}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>rlaif-code report</title>"
            f"<style>{style}</style></head><body>{''.join(sections_html)}</body></html>")
    atomic_write_text(out_dir / "report.md", "\n".join(md))
    atomic_write_text(out_dir / "report.html", page)
    print(f"report written to {out_dir / 'report.md'} and {out_dir / 'report.html'}")
    return {"report_md": str(out_dir / "report.md"), "report_html": str(out_dir / "report.html"),
            "deltas": deltas[1:]}


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)
