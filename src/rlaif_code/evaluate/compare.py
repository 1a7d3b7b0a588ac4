"""The evaluate stage of `rlaif run`: every model's greedy answers on the eval split, scored alike.

Rows of the comparison: each trained model (`models`: name -> model directory; the pipeline
passes M_SFT as `sft` and M_RL as `rlaif`), the reference answers themselves (the control:
the ceiling of each metric, and for executability what the sandbox allows), and on
HuggingFace and TorchHub Gorilla-7B's released answers to the same items. Each row is one
`out_dir/<name>.json` from `rlaif eval`'s scorer, with per-item values for the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import atomic_write_json, atomic_write_jsonl, read_jsonl
from rlaif_code.core.config import check
from rlaif_code.data.apibench import EVAL_FILES
from rlaif_code.data.parse import FIELDS, format_answer
from rlaif_code.data.source import DataSource
from rlaif_code.evaluate.stage import EvalConfig, evaluate
from rlaif_code.sample.stage import SampleConfig, with_api_database
from rlaif_code.sample.stage import run as run_sample

# How a model's row is named in tables; other names are shown as they are.
LABELS = {"sft": "SFT", "rlaif": "RLAIF", "rft": "RFT (SFT + accepted answers)"}
SUMMARY_KEYS = ("accuracy", "hallucination", "exact_match", "rouge", "codebleu", "executability")


@dataclass
class EvaluateSection:
    """How the eval answers are made and scored (writes eval/sft.json, eval/rlaif.json, ...)."""

    # Decoding of the eval answers (greedy, one per item, by default).
    sample: SampleConfig = field(default_factory=lambda: SampleConfig(temperature=0.0, num_samples=1))
    # The scorer's settings (`rlaif eval`); hub, data and file paths are set by the pipeline.
    score: EvalConfig = field(default_factory=EvalConfig)
    reference_control: bool = True  # score the reference answers too: the ceiling of each metric
    # Best-of-n baselines: n sampled SFT answers per item, the reward model's favourite kept (WebGPT's
    # baseline, which RL has to beat); one sampling of max(n) answers serves every n. []: none.
    best_of_n: list[int] = field(default_factory=lambda: [4, 8])
    best_of_n_temperature: float = 0.9  # the sampling of the best-of-n candidates (top_p from `sample`)

    def __post_init__(self) -> None:
        check(all(n >= 1 for n in self.best_of_n), "best_of_n", f"each n must be >= 1, got {self.best_of_n}")
        check(self.best_of_n_temperature > 0, "best_of_n_temperature",
              f"must be > 0 (the candidates are sampled), got {self.best_of_n_temperature}")
    # Gorilla-7B's released answers scored on the same items (hf: FT_0_shot, FT_oracle, RT_bm25; th: FT_0_shot,
    # FT_oracle; none for tf)
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
    reward_model: Path | None = None  # the reward model best-of-n picks with (None: no best-of-n rows)
    api_db: str | None = None  # a user's API database (hub custom); None: the hub's own


def reference_answers(eval_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each eval item's own reference, formatted as an answer (the control row)."""
    return [{"example_id": r["example_id"], "sample_id": 0, "text": format_answer({k: r[k] for k in FIELDS})}
            for r in eval_rows]


GORILLA_RESPONSES = {"hf": "huggingface", "th": "torchhub"}


def gorilla_answers(data: str | None, eval_rows: list[dict[str, Any]], kind: str,
                    hub: str = "hf") -> list[dict[str, Any]]:
    """Gorilla-7B's released answers (`kind`: FT_0_shot, ...) to the items of `eval_rows` from the hub's
    own eval file (question_id: its 1-based line)."""
    stem = Path(EVAL_FILES[hub]).stem
    wanted = {r["question_id"] for r in eval_rows if r["example_id"].startswith(stem + ":")}
    path = DataSource.resolve(data).path(f"responses/response_{GORILLA_RESPONSES[hub]}_Gorilla_{kind}.jsonl")
    return [row for row in read_jsonl(path) if row.get("question_id") in wanted]


def decoding(section: EvaluateSection, inputs: CompareInputs) -> SampleConfig:
    """The eval answers' decoding, reading the run's API database when it is constrained."""
    return with_api_database(section.sample, inputs.hub, inputs.data, inputs.api_db)


def best_of_n_files(section: EvaluateSection, inputs: CompareInputs) -> dict[int, Path]:
    """n -> a responses file holding, per eval item, the reward model's favourite of the SFT model's
    first n sampled answers (ties: the earlier sample)."""
    from rlaif_code.reward.model import load_reward_model, score_texts

    n_max = max(section.best_of_n)
    out = inputs.samples_dir / "eval_sft_candidates"
    run_sample(replace(decoding(section, inputs), seed=inputs.seed, model=str(inputs.models["sft"]),
                       data_dir=str(inputs.data_dir), split="eval", input_file=None, out_dir=str(out),
                       num_samples=n_max, temperature=section.best_of_n_temperature))
    candidates = read_jsonl(out / "samples.jsonl")
    model, tokenizer = load_reward_model(str(inputs.reward_model))
    scores = score_texts(model, tokenizer, [row["prompt"] + row["text"] for row in candidates])
    files = {}
    for n in sorted(set(section.best_of_n)):
        best: dict[str, tuple[float, int, dict[str, Any]]] = {}
        for row, score in zip(candidates, scores):
            key, rank = str(row["example_id"]), int(row["sample_id"])
            if rank < n and (key not in best or (score, -rank) > best[key][:2]):
                best[key] = (score, -rank, row)
        files[n] = inputs.samples_dir / f"best_of_{n}.jsonl"
        atomic_write_jsonl(files[n], [{**row, "sample_id": 0, "reward_score": score}
                                      for score, _, row in best.values()])
    return files


def run_comparison(section: EvaluateSection, inputs: CompareInputs) -> dict[str, Any]:
    """Score every row; returns the headline figures of each, by row name."""
    eval_rows = read_jsonl(inputs.data_dir / "eval.jsonl")
    score = replace(section.score, hub=inputs.hub, data=inputs.data, eval_set=str(inputs.data_dir / "eval.jsonl"),
                    show_table=True, api_db=inputs.api_db)
    figures: dict[str, Any] = {}

    def score_file(name: str, label: str, responses: Path) -> None:
        result = evaluate(replace(score, responses=str(responses), label=label, out=None))
        atomic_write_json(inputs.out_dir / f"{name}.json", result)
        figures[name] = {k: result[k] for k in SUMMARY_KEYS if k in result}

    for name, model in inputs.models.items():
        out = inputs.samples_dir / f"eval_{name}"
        run_sample(replace(decoding(section, inputs), seed=inputs.seed, model=str(model), data_dir=str(inputs.data_dir),
                           split="eval", input_file=None, out_dir=str(out)))
        score_file(name, LABELS.get(name, name), out / "samples.jsonl")
    if section.best_of_n and inputs.reward_model is not None and "sft" in inputs.models:
        for n, path in best_of_n_files(section, inputs).items():
            score_file(f"best_of_{n}", f"best-of-{n} (SFT samples, reward model picks)", path)
    if section.reference_control:
        control = inputs.samples_dir / "eval_reference.jsonl"
        atomic_write_jsonl(control, reference_answers(eval_rows))
        score_file("reference", "reference answers (control)", control)
    if inputs.hub in GORILLA_RESPONSES:
        for kind in section.gorilla_baselines:
            subset = gorilla_answers(inputs.data, eval_rows, kind, inputs.hub)
            if subset:
                baseline = inputs.samples_dir / f"baseline_gorilla_{kind}.jsonl"
                atomic_write_jsonl(baseline, subset)
                score_file(f"gorilla_{kind.lower()}", f"Gorilla-7B {kind} (released answers)", baseline)
    return figures
