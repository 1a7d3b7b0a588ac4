"""The evaluate stage of `rlaif run`: every model's greedy answers on the eval split, scored alike.

Rows of the comparison: each trained model (`models`: name -> model directory; the pipeline
passes M_SFT as `sft` and M_RL as `rlaif`), the reference answers themselves (the control:
the ceiling of each metric, and for executability what the sandbox allows), and on
HuggingFace Gorilla-7B's released answers to the same items. Each row is one
`out_dir/<name>.json` from `rlaif eval`'s scorer, with per-item values for the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import atomic_write_json, atomic_write_jsonl, read_jsonl
from rlaif_code.data.apibench import EVAL_FILES
from rlaif_code.data.parse import FIELDS, format_answer
from rlaif_code.data.source import DataSource
from rlaif_code.evaluate.stage import EvalConfig, evaluate
from rlaif_code.sample.stage import SampleConfig
from rlaif_code.sample.stage import run as run_sample

# How a model's row is named in tables; other names are shown as they are.
LABELS = {"sft": "SFT", "rlaif": "RLAIF"}
SUMMARY_KEYS = ("accuracy", "hallucination", "exact_match", "rouge", "codebleu", "executability")


@dataclass
class EvaluateSection:
    """How the eval answers are made and scored (writes eval/sft.json, eval/rlaif.json, ...)."""

    # Decoding of the eval answers (greedy, one per item, by default).
    sample: SampleConfig = field(default_factory=lambda: SampleConfig(temperature=0.0, num_samples=1))
    # The scorer's settings (`rlaif eval`); hub, data and file paths are set by the pipeline.
    score: EvalConfig = field(default_factory=EvalConfig)
    reference_control: bool = True  # score the reference answers too: the ceiling of each metric
    # Gorilla-7B's released answers scored on the same items (hf only): FT_0_shot, FT_oracle, ...
    gorilla_baselines: list[str] = field(default_factory=lambda: ["FT_0_shot"])


@dataclass
class CompareInputs:
    """Where the comparison reads and writes; wired by the pipeline, not set in YAML."""

    data_dir: Path  # the data stage's output (eval.jsonl)
    models: dict[str, Path]  # row name -> model directory
    samples_dir: Path  # eval answers, one folder per model
    out_dir: Path  # one result JSON per row
    hub: str
    data: str | None  # Gorilla data dir
    seed: int


def reference_answers(eval_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each eval item's own reference, formatted as an answer (the control row)."""
    return [{"example_id": r["example_id"], "sample_id": 0, "text": format_answer({k: r[k] for k in FIELDS})}
            for r in eval_rows]


def gorilla_answers(data: str | None, eval_rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Gorilla-7B's released HuggingFace answers (`kind`: FT_0_shot, ...) to the items in `eval_rows`."""
    stem = Path(EVAL_FILES["hf"]).stem
    wanted = {r["question_id"] for r in eval_rows if r["example_id"].startswith(stem + ":")}
    path = DataSource.resolve(data).path(f"responses/response_huggingface_Gorilla_{kind}.jsonl")
    return [row for row in read_jsonl(path) if row.get("question_id") in wanted]


def run_comparison(section: EvaluateSection, inputs: CompareInputs) -> dict[str, Any]:
    """Score every row; returns the headline figures of each, by row name."""
    eval_rows = read_jsonl(inputs.data_dir / "eval.jsonl")
    score = replace(section.score, hub=inputs.hub, data=inputs.data, eval_set=str(inputs.data_dir / "eval.jsonl"),
                    show_table=True)
    figures: dict[str, Any] = {}

    def score_file(name: str, label: str, responses: Path) -> None:
        result = evaluate(replace(score, responses=str(responses), label=label, out=None))
        atomic_write_json(inputs.out_dir / f"{name}.json", result)
        figures[name] = {k: result[k] for k in SUMMARY_KEYS if k in result}

    for name, model in inputs.models.items():
        out = inputs.samples_dir / f"eval_{name}"
        run_sample(replace(section.sample, seed=inputs.seed, model=str(model), data_dir=str(inputs.data_dir),
                           split="eval", input_file=None, out_dir=str(out)))
        score_file(name, LABELS.get(name, name), out / "samples.jsonl")
    if section.reference_control:
        control = inputs.samples_dir / "eval_reference.jsonl"
        atomic_write_jsonl(control, reference_answers(eval_rows))
        score_file("reference", "reference answers (control)", control)
    if inputs.hub == "hf":
        for kind in section.gorilla_baselines:
            subset = gorilla_answers(inputs.data, eval_rows, kind)
            if subset:
                baseline = inputs.samples_dir / f"baseline_gorilla_{kind}.jsonl"
                atomic_write_jsonl(baseline, subset)
                score_file(f"gorilla_{kind.lower()}", f"Gorilla-7B {kind} (released answers)", baseline)
    return figures
