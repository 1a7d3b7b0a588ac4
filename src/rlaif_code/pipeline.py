"""`rlaif run --config FILE`: data -> sft -> sample -> feedback -> reward -> ppo -> evaluate -> report.

One YAML file holds a section per stage (each section is that stage's own config
dataclass); the pipeline owns every path, so a section never names its inputs or
outputs: they are wired inside the run directory.

The run directory's `manifest.json` records the resolved config, the seed, package
versions, and for each stage its status, a fingerprint and its artifact hashes. A
stage's fingerprint covers its own section and the fingerprint of the stage before
it, so changing one section reruns that stage and everything after it. A stage is
marked done only after its `run` returned; a stage that was interrupted is simply run
again, and the stages resume from what they had written (samples, checkpoints, the
judge cache).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from rlaif_code.artifacts import InputError, atomic_write_json, file_sha256, read_json
from rlaif_code.config import ConfigError, to_dict
from rlaif_code.data import DataConfig
from rlaif_code.data import run as run_data
from rlaif_code.evaluate import EvalConfig
from rlaif_code.feedback import FeedbackConfig
from rlaif_code.ppo import PPOConfig
from rlaif_code.report import ReportConfig
from rlaif_code.reward import RewardConfig
from rlaif_code.sample import SampleConfig
from rlaif_code.sft import SFTConfig

STAGE_ORDER = ("data", "sft", "sample", "feedback", "reward", "ppo", "evaluate", "report")


@dataclass
class EvaluateSection:
    """How the eval answers are made and scored (the pipeline writes eval/sft.json, eval/rlaif.json)."""

    sample: SampleConfig = field(default_factory=lambda: SampleConfig(temperature=0.0, num_samples=1))
    score: EvalConfig = field(default_factory=EvalConfig)
    reference_control: bool = True  # score the reference answers too: the ceiling of each metric
    gorilla_baselines: list[str] = field(default_factory=lambda: ["FT_0_shot"])  # hf only


@dataclass
class PipelineConfig:
    run_dir: str = "runs/default"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
    report: ReportConfig = field(default_factory=ReportConfig)


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="from_stage", choices=STAGE_ORDER, default=None,
                        help="rerun this stage and every stage after it")
    parser.add_argument("--only", dest="only_stage", choices=STAGE_ORDER, default=None,
                        help="rerun just this stage")
    parser.add_argument("--force", action="store_true",
                        help="reuse a run directory that another config made")


def run_from_cli(cfg: PipelineConfig, args: argparse.Namespace) -> dict[str, Any]:
    return run(cfg, from_stage=args.from_stage, only_stage=args.only_stage, force=args.force,
               config_file=args.config)


def _versions() -> dict[str, str]:
    out = {}
    for name in ("rlaif-code", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "codebleu",
                 "rouge-score", "openai"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _fingerprint(section: Any, previous: str) -> str:
    inputs: dict[str, Any] = {"section": to_dict(section), "previous": previous}
    if hasattr(section, "rubric"):  # the rubric's content, not just its path, decides the labels
        from rlaif_code.feedback.rubric import rubric_digest

        inputs["rubric_sha256"] = rubric_digest(section.rubric)
    blob = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Manifest:
    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def open(cls, run_dir: Path, cfg: PipelineConfig, config_file: str | None, force: bool) -> "Manifest":
        path = run_dir / "manifest.json"
        identity = Path(config_file).name if config_file else "(defaults)"
        if path.is_file():
            data = read_json(path)
            if data.get("config_file") != identity and not force:
                raise InputError(f"{run_dir} was made by config {data.get('config_file')!r}, not {identity!r}: "
                                 "choose another run_dir, or pass --force to reuse it")
        else:
            data = {"stages": {}}
        data.update({"config_file": identity, "config": to_dict(cfg), "seed": cfg.seed, "versions": _versions()})
        manifest = cls(path, data)
        manifest.save()
        return manifest

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def is_done(self, stage: str, fingerprint: str) -> bool:
        entry = self.data["stages"].get(stage, {})
        return entry.get("status") == "done" and entry.get("fingerprint") == fingerprint

    def mark(self, stage: str, **fields: Any) -> None:
        self.data["stages"].setdefault(stage, {}).update(fields)
        self.save()

    def mark_later_stale(self, stage: str) -> None:
        """Later stages were made from `stage`'s old outputs: a run that stops early (--only, a
        crash) must not leave them claiming to be done."""
        later = [s for s in STAGE_ORDER[STAGE_ORDER.index(stage) + 1:]
                 if self.data["stages"].get(s, {}).get("status") == "done"]
        for name in later:
            self.data["stages"][name]["status"] = "stale"
        if later:
            self.save()


def _outputs(paths: list[Path]) -> dict[str, str]:
    hashes = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and file.stat().st_size < (1 << 30):
                hashes[str(file)] = file_sha256(file)
    return hashes


def _with_seed(section: Any, seed: int) -> Any:
    return replace(section, seed=seed) if hasattr(section, "seed") else section


def _stage_calls(cfg: PipelineConfig, run_dir: Path) -> dict[str, tuple[Any, Callable[[], Any], list[Path]]]:
    """stage -> (the section that defines it, a call that runs it, the directories it owns)."""
    from rlaif_code import feedback, ppo, reward, sample, sft

    seed = cfg.seed
    d = {name: run_dir / name for name in STAGE_ORDER}
    data_cfg = replace(_with_seed(cfg.data, seed), out_dir=str(d["data"]))
    sft_cfg = replace(_with_seed(cfg.sft, seed), data_dir=str(d["data"]), out_dir=str(d["sft"]))
    sample_cfg = replace(_with_seed(cfg.sample, seed), model=str(d["sft"]), data_dir=str(d["data"]),
                         split="train", input_file=None, out_dir=str(d["sample"]))
    # The judge cache lives outside the stage's directory: a rerun of feedback after a
    # change upstream must not throw away answers that were paid for.
    feedback_cfg = replace(cfg.feedback, samples=str(d["sample"] / "samples.jsonl"), data_dir=str(d["data"]),
                           data=cfg.data.data, out_dir=str(d["feedback"]),
                           cache_path=cfg.feedback.cache_path or str(run_dir / "cache" / "judge.sqlite"))
    reward_cfg = replace(_with_seed(cfg.reward, seed), base_model=str(d["sft"]),
                         feedback=str(d["feedback"] / "feedback.jsonl"), out_dir=str(d["reward"]))
    ppo_cfg = replace(_with_seed(cfg.ppo, seed), policy=str(d["sft"]), reward_model=str(d["reward"]),
                      data_dir=str(d["data"]), prompts_file=None, out_dir=str(d["ppo"]))
    report_cfg = replace(cfg.report, run_dir=str(run_dir), out_dir=str(d["report"]))
    return {
        "data": (data_cfg, lambda: run_data(data_cfg), [d["data"]]),
        "sft": (sft_cfg, lambda: sft.run(sft_cfg), [d["sft"]]),
        "sample": (sample_cfg, lambda: sample.run(sample_cfg), [d["sample"]]),
        "feedback": (feedback_cfg, lambda: feedback.run(feedback_cfg), [d["feedback"]]),
        "reward": (reward_cfg, lambda: reward.run(reward_cfg), [d["reward"]]),
        "ppo": (ppo_cfg, lambda: ppo.run(ppo_cfg), [d["ppo"]]),
        "evaluate": (cfg.evaluate, lambda: run_evaluation(cfg, run_dir), [run_dir / "eval", run_dir / "samples"]),
        "report": (report_cfg, lambda: _report(report_cfg), [d["report"]]),
    }


def _report(cfg: ReportConfig) -> dict[str, Any]:
    from rlaif_code.report import run as run_report

    result = run_report(cfg)
    return {k: v for k, v in result.items() if k != "deltas"}


def run_evaluation(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    """Greedy answers of M_SFT and M_RL on the eval split, scored alike, plus baselines and control."""
    from rlaif_code import sample
    from rlaif_code.artifacts import read_jsonl, atomic_write_jsonl
    from rlaif_code.data.apibench import EVAL_FILES
    from rlaif_code.data.parse import format_answer
    from rlaif_code.data.source import DataSource
    from rlaif_code.evaluate import evaluate

    section = cfg.evaluate
    data_dir, samples_dir, eval_dir = run_dir / "data", run_dir / "samples", run_dir / "eval"
    eval_rows = read_jsonl(data_dir / "eval.jsonl")
    hub = cfg.data.hub
    score = replace(section.score, hub=hub, data=cfg.data.data, eval_set=str(data_dir / "eval.jsonl"),
                    show_table=True)
    figures: dict[str, Any] = {}

    def score_file(name: str, label: str, responses: Path) -> None:
        result = evaluate(replace(score, responses=str(responses), label=label, out=None))
        atomic_write_json(eval_dir / f"{name}.json", result)
        figures[name] = {k: result.get(k) for k in ("accuracy", "hallucination", "exact_match", "rouge",
                                                   "codebleu", "executability") if k in result}

    for name, label, model in (("sft", "SFT", run_dir / "sft"), ("rlaif", "RLAIF", run_dir / "ppo" / "model")):
        out = samples_dir / f"eval_{name}"
        sample.run(replace(_with_seed(section.sample, cfg.seed), model=str(model), data_dir=str(data_dir),
                           split="eval", input_file=None, out_dir=str(out)))
        score_file(name, label, out / "samples.jsonl")
    if section.reference_control:
        control = samples_dir / "eval_reference.jsonl"
        atomic_write_jsonl(control, ({"example_id": r["example_id"], "sample_id": 0,
                                      "text": format_answer({k: r[k] for k in ("domain", "api_call", "provider",
                                                                               "explanation", "code")})}
                                     for r in eval_rows))
        score_file("reference", "reference answers (control)", control)
    if hub == "hf" and section.gorilla_baselines:
        source = DataSource.resolve(cfg.data.data)
        hf_eval_stem = Path(EVAL_FILES["hf"]).stem
        wanted = {r["question_id"] for r in eval_rows if r["example_id"].startswith(hf_eval_stem + ":")}
        for kind in section.gorilla_baselines:
            path = source.path(f"responses/response_huggingface_Gorilla_{kind}.jsonl")
            subset = [row for row in read_jsonl(path) if row.get("question_id") in wanted]
            if subset:
                baseline = samples_dir / f"baseline_gorilla_{kind}.jsonl"
                atomic_write_jsonl(baseline, subset)
                score_file(f"gorilla_{kind.lower()}", f"Gorilla-7B {kind} (released answers)", baseline)
    return figures


def run(cfg: PipelineConfig, *, from_stage: str | None = None, only_stage: str | None = None,
        force: bool = False, config_file: str | None = None) -> dict[str, Any]:
    from rich.console import Console

    console = Console()
    if from_stage and only_stage:
        raise ConfigError("command line: --from and --only exclude each other")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.open(run_dir, cfg, config_file, force)
    calls = _stage_calls(cfg, run_dir)
    previous = ""
    invalid = False  # once a stage reruns, every later stage must rerun too
    results: dict[str, Any] = {}
    for stage in STAGE_ORDER:
        section, call, owned = calls[stage]
        fingerprint = _fingerprint(section, previous)
        previous = fingerprint
        if only_stage and stage != only_stage:
            continue
        forced = stage == only_stage or (from_stage is not None and
                                         STAGE_ORDER.index(stage) >= STAGE_ORDER.index(from_stage))
        if not forced and not invalid and manifest.is_done(stage, fingerprint) and all(p.exists() for p in owned):
            console.print(f"[dim]{stage}: done, skipped[/dim]")
            continue
        invalid = True
        manifest.mark_later_stale(stage)
        entry = manifest.data["stages"].get(stage, {})
        interrupted = entry.get("fingerprint") == fingerprint and entry.get("status") in ("running", "failed")
        if forced or not interrupted:
            # Outputs made from other inputs are stale; an interrupted stage keeps them to resume.
            for path in owned:
                shutil.rmtree(path, ignore_errors=True)
        else:
            console.print(f"{stage}: resuming an interrupted run")
        console.rule(f"[bold]{stage}")
        manifest.mark(stage, status="running", fingerprint=fingerprint, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
        started = time.perf_counter()
        try:
            metrics = call()
        except BaseException:
            manifest.mark(stage, status="failed", seconds=round(time.perf_counter() - started, 1))
            raise
        seconds = round(time.perf_counter() - started, 1)
        manifest.mark(stage, status="done", seconds=seconds, outputs=_outputs(owned),
                      metrics=metrics if isinstance(metrics, dict) else {})
        results[stage] = {"seconds": seconds}
        console.print(f"{stage}: done in {seconds:.1f} s")
    return results

