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
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import InputError, atomic_write_text, read_json, read_jsonl
from rlaif_code.core.config import check, check_at_least
from rlaif_code.core.fields import added_field
from rlaif_code.report.plots import ppo_curves
from rlaif_code.report.sections import dev_tables, feedback_tables, judge_tables, reward_tables
from rlaif_code.report.tables import (
    delta_sentence,
    delta_table,
    domain_table,
    exec_failure_table,
    html_table,
    load_evals,
    main_table,
    markdown_table,
    num,
    sample_answers,
    stages_table,
    versus_sft_table,
)


@dataclass
class ReportConfig:
    run_dir: str = ""  # the run directory to report on (`rlaif report RUN_DIR`)
    out_dir: str | None = None  # where report.md and report.html go; default: RUN_DIR/report
    bootstrap: int = 2000  # bootstrap resamples behind each RLAIF - SFT confidence interval
    seed: int = 0  # seeds the bootstrap and which answers are shown
    sample_answers: int = 3  # answers shown side by side
    # Also write report.png: report.html as a real browser draws it (headless Chromium, found on PATH as
    # chromium, chromium-browser or google-chrome), to look at before the report is committed
    screenshot: bool = added_field(False)
    screenshot_size: list[int] = added_field(default_factory=lambda: [1280, 5000])  # its width and height in pixels

    def __post_init__(self) -> None:
        check_at_least(self, 1, "bootstrap")
        check_at_least(self, 0, "sample_answers")
        check(len(self.screenshot_size) == 2 and min(self.screenshot_size) >= 100, "screenshot_size",
              f"must be [width, height] of at least 100 pixels each, got {self.screenshot_size}")


BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def screenshot(page: Path, png: Path, size: list[int], timeout: float = 120.0) -> None:
    """A headless Chromium's drawing of `page` to `png`; an InputError that says what to install otherwise."""
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        raise InputError(f"report.screenshot: no headless browser on PATH (looked for {', '.join(BROWSERS)}); "
                         "install Chromium (Debian: apt-get install chromium) or set report.screenshot: false")
    # As root Chromium refuses to start inside its own sandbox; the page is ours and runs no script.
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []
    command = [browser, "--headless=new", *sandbox, "--disable-gpu", "--hide-scrollbars",
               f"--window-size={size[0]},{size[1]}", f"--screenshot={png.resolve()}", page.resolve().as_uri()]
    png.unlink(missing_ok=True)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise InputError(f"report.screenshot: {browser} did not finish within {timeout:.0f} s") from None
    if not png.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"report.screenshot: {browser} wrote no screenshot (exit {done.returncode}): {last}")


@dataclass
class _Inputs:
    """Everything the report shows, read from the run directory before anything is written."""

    name: str
    table: list[list[str]]
    deltas: list[list[str]]
    versus: list[list[str]]
    curve_png: bytes | None
    curve_summary: dict[str, Any]
    reward: dict[str, Any]
    feedback: dict[str, Any]
    judge: dict[str, Any] | None
    dev: list[tuple[str, list[list[str]]]]
    domains: list[list[str]]
    exec_failures: list[list[str]]
    answers: list[dict[str, str]]
    manifest: dict[str, Any]


class _Page:
    """The Markdown and HTML renderings, built side by side so their sections stay in step."""

    def __init__(self) -> None:
        self.md: list[str] = []
        self.html: list[str] = []

    def raw(self, md: str, page: str) -> None:
        self.md.append(md)
        self.html.append(page)

    def heading(self, title: str) -> None:
        self.raw(f"## {title}\n", f"<h2>{title}</h2>")

    def text(self, line: str) -> None:
        self.raw(line + "\n", f"<p>{html.escape(line)}</p>")

    def table(self, rows: list[list[str]]) -> None:
        self.raw(markdown_table(rows), html_table(rows))


def _stage_metrics(run_dir: Path, stage: str) -> dict[str, Any]:
    path = run_dir / stage / "stage.json"
    return read_json(path).get("metrics", {}) if path.is_file() else {}


def _optional_json(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _read_inputs(run_dir: Path, cfg: ReportConfig) -> _Inputs:
    evals = load_evals(run_dir)
    if not evals:
        raise InputError(f"{run_dir / 'eval'}: no evaluation results (*.json) to report")
    metrics = [m for m in ("accuracy", "hallucination", "exact_match", "rouge", "codebleu", "executability")
               if any(m in r for r in evals.values())]
    table = main_table(evals, metrics)
    deltas = delta_table(evals, metrics, cfg.bootstrap, cfg.seed)
    versus = versus_sft_table(evals, metrics, cfg.bootstrap, cfg.seed)
    curve_png, curve_summary = ppo_curves(run_dir)
    reward = _stage_metrics(run_dir, "reward")
    feedback = _stage_metrics(run_dir, "feedback")
    judge = _optional_json(run_dir / "feedback" / "judge_check.json")
    dev_path = run_dir / "ppo" / "dev.jsonl"
    dev = dev_tables(read_jsonl(dev_path) if dev_path.is_file() else [], _stage_metrics(run_dir, "ppo"))
    domains = domain_table(evals)
    answers = sample_answers(run_dir, evals, cfg.sample_answers, cfg.seed)
    manifest = _optional_json(run_dir / "manifest.json") or {}
    return _Inputs(run_dir.name, table, deltas, versus, curve_png, curve_summary, reward, feedback, judge, dev, domains,
                   exec_failure_table(evals), answers, manifest)


def _ppo_section(page: _Page, png: bytes, summary: dict[str, Any]) -> None:
    trend = ", ".join(f"{k}: {num(a)} -> {num(b)}" for k, (a, b) in summary.items())
    page.heading("PPO")
    page.text("Per PPO step: the mean reward of the step's rollouts, the KL of the policy to the SFT model per "
              "answer (the k3 estimator, which cannot go negative) and the mean answer length.")
    page.raw(f"![PPO curves](ppo_curves.png)\n\nFirst -> last step: {trend}\n",
             f'<img alt="PPO curves" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    page.html.append(f"<p>First &rarr; last step: {html.escape(trend)}</p>")


def _captioned(page: _Page, tables: list[tuple[str, list[list[str]]]]) -> None:
    for caption, rows in tables:
        page.text(caption + ":")
        page.table(rows)


def _judge_section(page: _Page, judge: dict[str, Any] | None, feedback: dict[str, Any]) -> None:
    page.heading("Judge agreement with the tool checks")
    if judge:
        _captioned(page, judge_tables(judge))
        return
    # Say so rather than leave the reader to wonder whether agreement was high.
    page.text("Not measured in this run" + (" (judge: tools, so the tool checks answered every question)"
                                            if feedback.get("judge") == "tools" else "")
              + ". `rlaif judge-check` measures an LLM judge against the tool checks.")


def _answers_section(page: _Page, answers: list[dict[str, str]]) -> None:
    page.heading("Sample answers (SFT vs RLAIF)")
    page.text("A seeded draw of eval items, each with both models' greedy answers (the first 600 characters).")
    for answer in answers:
        sft, rlaif = html.escape(answer["sft"][:600]), html.escape(answer["rlaif"][:600])
        page.raw(f"**{answer['example_id']}**: {answer['prompt'][:300]}\n\n| SFT | RLAIF |\n|---|---|\n"
                 f"| <pre>{sft}</pre> | <pre>{rlaif}</pre> |\n",
                 f"<h3>{html.escape(answer['example_id'])}</h3><p>{html.escape(answer['prompt'][:300])}</p>"
                 f"<table><tr><th>SFT</th><th>RLAIF</th></tr><tr><td><pre>{sft}</pre></td>"
                 f"<td><pre>{rlaif}</pre></td></tr></table>")


def _render(inputs: _Inputs) -> _Page:
    page = _Page()
    page.raw(f"# rlaif-code report: {inputs.name}\n", f"<h1>rlaif-code report: {html.escape(inputs.name)}</h1>")
    page.md.append("All figures in percent. Accuracy, hallucination: Gorilla's AST semantics; exact: the reference "
                   "API itself; ROUGE: mean of R1/R2/RL/RLsum F; CodeBLEU: codebleu package (see README).\n")
    page.heading("Results")
    page.text("Each model's greedy answers to the same eval items, scored alike; the reference answers' row is "
              "the ceiling of each metric (for executability: what the sandbox lets the reference code do).")
    page.table(inputs.table)
    page.heading("RLAIF - SFT (paired bootstrap, 95% CI)")
    page.text(delta_sentence(inputs.deltas))
    if len(inputs.deltas) > 1:
        page.table(inputs.deltas)
    if len(inputs.versus) > 2:  # more rows than RLAIF alone: the baselines RL has to beat
        page.heading("Every model against SFT (paired bootstrap, 95% CI)")
        page.text("Each row minus SFT on the items both answered, with its 95% interval: an interval that "
                  "excludes 0 is a difference larger than the noise of this eval set.")
        page.table(inputs.versus)
    if inputs.curve_png:
        _ppo_section(page, inputs.curve_png, inputs.curve_summary)
    _captioned(page, inputs.dev)
    if inputs.feedback:
        page.heading("AI feedback")
        _captioned(page, feedback_tables(inputs.feedback))
    if inputs.reward:
        page.heading("Reward model")
        _captioned(page, reward_tables(inputs.reward))
    _judge_section(page, inputs.judge, inputs.feedback)
    if len(inputs.domains) > 1:
        page.heading("Per domain")
        models = " and ".join(cell.removesuffix(" accuracy") for cell in inputs.domains[0]
                              if cell.endswith(" accuracy"))
        page.text(f"Gorilla accuracy and exact-API match of {models} on the eval items of each domain "
                  "(small domains are a handful of items: read them as examples, not rates).")
        page.table(inputs.domains)
    if inputs.exec_failures:
        page.heading("Why code did not run")
        page.text("Eval items whose code did not run to its end in the sandbox, per model, by cause (the "
                  "reference answers' column is what the sandbox itself cannot run: missing packages, "
                  "code that is not Python, library drift).")
        page.table(inputs.exec_failures)
    if inputs.answers:
        _answers_section(page, inputs.answers)
    if inputs.manifest:
        page.heading("Stages")
        page.text("Wall time and peak resident memory of each stage on the machine of the manifest (a process "
                  "that ran several stages reports its running maximum).")
        page.table(stages_table(inputs.manifest))
    return page


_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
          "text-align:right;vertical-align:top}td:first-child,th:first-child{text-align:left}"
          "pre{white-space:pre-wrap;text-align:left;margin:0;font-size:12px}img{max-width:100%}")


def run(cfg: ReportConfig) -> dict[str, Any]:
    if not cfg.run_dir:
        raise InputError("no run directory given: rlaif report RUN_DIR")
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run directory not found: {run_dir}")
    out_dir = Path(cfg.out_dir) if cfg.out_dir else run_dir / "report"
    inputs = _read_inputs(run_dir, cfg)
    page = _render(inputs)
    if inputs.curve_png:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "ppo_curves.png").write_bytes(inputs.curve_png)
    html_page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>rlaif-code report</title>"
                 f"<style>{_STYLE}</style></head><body>{''.join(page.html)}</body></html>")
    atomic_write_text(out_dir / "report.md", "\n".join(page.md))
    atomic_write_text(out_dir / "report.html", html_page)
    written = {"report_md": str(out_dir / "report.md"), "report_html": str(out_dir / "report.html")}
    if cfg.screenshot:
        screenshot(out_dir / "report.html", out_dir / "report.png", cfg.screenshot_size)
        written["report_png"] = str(out_dir / "report.png")
    print(f"report written to {', '.join(written.values())}")
    return {**written, "deltas": inputs.deltas[1:]}
