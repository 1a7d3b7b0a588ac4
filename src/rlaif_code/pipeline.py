"""`rlaif run --config FILE`: [synth ->] data -> sft -> sample -> feedback -> reward -> ppo -> evaluate -> report.

One YAML file holds a section per stage (each section is that stage's own config
dataclass); the pipeline owns every path, so a section never names its inputs or
outputs: they are wired inside the run directory.

The run directory's `manifest.json` records the resolved config, the seed, package
versions, and for each stage its status, a fingerprint, how many times it ran, and its
artifact hashes. A stage's fingerprint covers its own section (plus the digests of files
the section names, `fingerprint_inputs`) and the fingerprint of the stage before it, so
changing one section reruns that stage and everything after it. A stage is marked done
only after its `run` returned; a stage that was interrupted is simply run again, and the
stages resume from what they had written (samples, checkpoints, the judge cache).
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

from rlaif_code.core.artifacts import InputError, atomic_write_json, content_inputs, file_sha256, read_json
from rlaif_code.core.config import ConfigError, to_dict
from rlaif_code.core.fields import added_field
from rlaif_code.data import DataConfig
from rlaif_code.evaluate.compare import CompareInputs, EvaluateSection, run_comparison
from rlaif_code.feedback import FeedbackConfig
from rlaif_code.ppo import PPOConfig
from rlaif_code.report import ReportConfig
from rlaif_code.reward import RewardConfig
from rlaif_code.sample import SampleConfig
from rlaif_code.sample.stage import with_api_database
from rlaif_code.sft import SFTConfig
from rlaif_code.sft.rft import RFTConfig
from rlaif_code.synth import SynthConfig

# rft before ppo: the fingerprints chain stage to stage, and PPO's settings change more often than RFT's
STAGE_ORDER = ("synth", "data", "sft", "sample", "feedback", "reward", "rft", "ppo", "evaluate", "report")


@dataclass
class PipelineConfig:
    run_dir: str = "runs/default"  # every stage's output goes in a folder of this directory
    seed: int = 0  # one seed for every stage that has one (each section's own seed is replaced)
    # torch's CPU threads for every stage (None: torch's default, one per core). Float sums are
    # split across threads, so a different count changes the last bits of every figure.
    threads: int | None = None
    # Iterated RLAIF (Llama 2's rounds): after each PPO round the policy it selected answers the training
    # prompts, feedback labels the new answers, the reward model is refitted on all labels so far (warm
    # started from the last one) and PPO continues from the selected model; 1: the paper's single pass
    rounds: int = 1
    # `rlaif synth`'s settings: training examples made from the API database (enabled: false, the default: no
    # synth stage, the run as before); hub, data, api_db and eval_file are the data section's
    synth: SynthConfig = added_field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)  # `rlaif data`'s settings
    sft: SFTConfig = field(default_factory=SFTConfig)  # `rlaif sft`'s settings (paths are wired)
    sample: SampleConfig = field(default_factory=SampleConfig)  # answers to the training prompts
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)  # `rlaif feedback`'s settings
    reward: RewardConfig = field(default_factory=RewardConfig)  # `rlaif reward`'s settings
    ppo: PPOConfig = field(default_factory=PPOConfig)  # `rlaif ppo`'s settings
    rft: RFTConfig = field(default_factory=RFTConfig)  # the RFT baseline: SFT continued on the accepted answers
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)  # eval answers and their scoring
    report: ReportConfig = field(default_factory=ReportConfig)  # `rlaif report`'s settings

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"rounds: must be >= 1 (got {self.rounds})")
        if self.rounds > 1 and self.ppo.reward_source == "feedback":
            raise ConfigError("rounds: a round refits the reward model, and ppo.reward_source: feedback uses none; "
                              "set ppo.reward_source: model or model+feedback, or rounds: 1")
        if self.ppo.dev_every and not self.data.dev_fraction:
            raise ConfigError("ppo.dev_every selects PPO's checkpoint on dev prompts, which data.dev_fraction: 0 "
                              "leaves out: set data.dev_fraction > 0, or ppo.dev_every: 0 to keep the last step")


@dataclass
class StageCall:
    name: str
    section: Any  # the config that defines the stage: its fingerprint
    call: Callable[[], Any]  # runs the stage, returns its metrics
    owned: list[Path]  # the directories it writes (removed before a fresh run)


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    # not argparse choices: with `rounds: k` the stages sample-r2 .. ppo-rK exist too (execute checks the name)
    names = f"{', '.join(STAGE_ORDER)}; with rounds: k also sample-rN, feedback-rN, reward-rN, ppo-rN"
    parser.add_argument("--from", dest="from_stage", metavar="STAGE", default=None,
                        help=f"rerun this stage and every stage after it ({names}); an interrupted one resumes")
    parser.add_argument("--only", dest="only_stage", metavar="STAGE", default=None,
                        help=f"rerun just this stage ({names}); an interrupted one resumes "
                             "(delete its directory to start over)")
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


def machine(threads: int | None) -> dict[str, Any]:
    """What decides the last bits of the figures besides config and seed: recorded in the manifest."""
    import os
    import platform

    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def peak_rss_mib() -> float:
    """The largest resident memory of this process (and of its finished children, such as sandboxed
    snippets) so far. A process that runs several stages reports the running maximum, so a stage's own
    peak is exact under `--only` (one stage per process), an upper bound otherwise."""
    import resource
    import sys

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    peaks = [resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return round(max(peaks) * scale / 2**20, 1)


def fingerprint(section: Any, previous: str) -> str:
    inputs: dict[str, Any] = {"section": to_dict(section), "previous": previous, **content_inputs(section)}
    blob = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Manifest:
    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def open(cls, run_dir: Path, config: dict[str, Any], seed: int, config_file: str | None,
             force: bool, machine: dict[str, Any] | None = None) -> Manifest:
        path = run_dir / "manifest.json"
        identity = Path(config_file).name if config_file else "(defaults)"
        if path.is_file():
            data = read_json(path)
            if data.get("config_file") != identity and not force:
                raise InputError(f"{run_dir} was made by config {data.get('config_file')!r}, not {identity!r}: "
                                 "choose another run_dir, or pass --force to reuse it")
        else:
            data = {"stages": {}}
        data.update({"config_file": identity, "config": config, "seed": seed, "versions": _versions(),
                     "machine": machine or {}})
        manifest = cls(path, data)
        manifest.save()
        return manifest

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def entry(self, stage: str) -> dict[str, Any]:
        return self.data["stages"].get(stage, {})

    def is_done(self, stage: str, fingerprint: str) -> bool:
        entry = self.entry(stage)
        return entry.get("status") == "done" and entry.get("fingerprint") == fingerprint

    def mark(self, stage: str, **fields: Any) -> None:
        self.data["stages"].setdefault(stage, {}).update(fields)
        self.save()

    def start(self, stage: str, fingerprint: str, later: list[str]) -> None:
        """`stage` runs (once more): stages after it were made from its old outputs, so a run that
        stops early (--only, a crash) must not leave them claiming to be done. One write."""
        for name in later:
            if self.entry(name).get("status") == "done":
                self.data["stages"][name]["status"] = "stale"
        runs = int(self.entry(stage).get("runs", 0)) + 1
        self.mark(stage, status="running", fingerprint=fingerprint, runs=runs,
                  started=time.strftime("%Y-%m-%dT%H:%M:%S"))


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


def stage_calls(cfg: PipelineConfig, run_dir: Path) -> list[StageCall]:
    """The method's stages in order, each with its inputs and outputs wired inside `run_dir`."""
    from rlaif_code import data, feedback, ppo, report, reward, sample, sft, synth
    from rlaif_code.sft import rft

    seed = cfg.seed
    d = {name: run_dir / name for name in STAGE_ORDER}
    synth_cfg = replace(_with_seed(cfg.synth, seed), hub=cfg.data.hub, data=cfg.data.data, api_db=cfg.data.api_db,
                        eval_file=cfg.data.eval_file, out_dir=str(d["synth"]),
                        cache_path=cfg.synth.cache_path or str(run_dir / "cache" / "synth.sqlite"))
    extra = [str(d["synth"] / "synth.jsonl")] if cfg.synth.enabled else []
    data_cfg = replace(_with_seed(cfg.data, seed), out_dir=str(d["data"]),
                       extra_train_files=[*cfg.data.extra_train_files, *extra])
    sft_cfg = replace(_with_seed(cfg.sft, seed), data_dir=str(d["data"]), out_dir=str(d["sft"]))
    sample_cfg = replace(with_api_database(_with_seed(cfg.sample, seed), cfg.data.hub, cfg.data.data, cfg.data.api_db),
                         model=str(d["sft"]), data_dir=str(d["data"]), split="train", input_file=None,
                         out_dir=str(d["sample"]))
    # The judge cache lives outside the stage's directory: a rerun of feedback after a
    # change upstream must not throw away answers that were paid for.
    feedback_cfg = replace(cfg.feedback, samples=str(d["sample"] / "samples.jsonl"), data_dir=str(d["data"]),
                           data=cfg.data.data, api_db=cfg.data.api_db, out_dir=str(d["feedback"]),
                           cache_path=cfg.feedback.cache_path or str(run_dir / "cache" / "judge.sqlite"))
    reward_cfg = replace(_with_seed(cfg.reward, seed), base_model=str(d["sft"]),
                         feedback=str(d["feedback"] / "feedback.jsonl"), out_dir=str(d["reward"]),
                         synthetic_data_dir=str(d["data"]) if cfg.reward.synthetic_data_dir else None)
    ppo_cfg = replace(_with_seed(cfg.ppo, seed), policy=str(d["sft"]), reward_model=str(d["reward"]),
                      data_dir=str(d["data"]), data=cfg.data.data, api_db=cfg.data.api_db, prompts_file=None,
                      out_dir=str(d["ppo"]))
    rft_cfg = replace(_with_seed(cfg.rft, seed), base_model=str(d["sft"]),
                      feedback=str(d["feedback"] / "feedback.jsonl"), out_dir=str(d["rft"]))
    rounds = round_calls(cfg, run_dir, sample_cfg, feedback_cfg, reward_cfg, ppo_cfg)
    final_ppo = Path(rounds[-1].section.out_dir) if rounds else d["ppo"]
    models = {"sft": d["sft"], **({"rlaif-round1": d["ppo"] / "model"} if rounds else {}),
              "rlaif": final_ppo / "model", **({"rft": d["rft"] / "model"} if cfg.rft.enabled else {})}
    compare = CompareInputs(data_dir=d["data"], models=models,
                            samples_dir=run_dir / "samples", out_dir=run_dir / "eval", hub=cfg.data.hub,
                            data=cfg.data.data, seed=seed, reward_model=d["reward"], api_db=cfg.data.api_db)
    report_cfg = replace(cfg.report, run_dir=str(run_dir), out_dir=str(d["report"]))
    # Absent unless enabled: the data stage's fingerprint then chains from nothing, as before synth existed.
    synth_call = ([StageCall("synth", synth_cfg, lambda: synth.run(synth_cfg), [d["synth"]])]
                  if cfg.synth.enabled else [])
    return [
        *synth_call,
        StageCall("data", data_cfg, lambda: data.run(data_cfg), [d["data"]]),
        StageCall("sft", sft_cfg, lambda: sft.run(sft_cfg), [d["sft"]]),
        StageCall("sample", sample_cfg, lambda: sample.run(sample_cfg), [d["sample"]]),
        StageCall("feedback", feedback_cfg, lambda: feedback.run(feedback_cfg), [d["feedback"]]),
        StageCall("reward", reward_cfg, lambda: reward.run(reward_cfg), [d["reward"]]),
        StageCall("rft", rft_cfg, lambda: rft.run(rft_cfg), [d["rft"]]),
        StageCall("ppo", ppo_cfg, lambda: ppo.run(ppo_cfg), [d["ppo"]]),
        *rounds,
        StageCall("evaluate", cfg.evaluate, lambda: run_comparison(cfg.evaluate, compare),
                  [compare.out_dir, compare.samples_dir]),
        StageCall("report", report_cfg, lambda: _without_deltas(report.run(report_cfg)), [d["report"]]),
    ]


def round_calls(cfg: PipelineConfig, run_dir: Path, sample_cfg: Any, feedback_cfg: Any, reward_cfg: Any,
                ppo_cfg: Any) -> list[StageCall]:
    """Rounds 2..k: sample-rN, feedback-rN, reward-rN and ppo-rN, in run_dir/roundN/, each a resumable
    stage of its own (a round that did not finish is never evaluated: evaluate comes after them all)."""
    from rlaif_code import feedback, ppo, reward, sample

    calls: list[StageCall] = []
    previous_ppo, previous_reward = Path(ppo_cfg.out_dir), Path(reward_cfg.out_dir)
    feedback_files = [str(Path(feedback_cfg.out_dir) / "feedback.jsonl")]
    for k in range(2, cfg.rounds + 1):
        here = run_dir / f"round{k}"
        s_cfg = replace(sample_cfg, model=str(previous_ppo / "model"), out_dir=str(here / "sample"),
                        seed=sample_cfg.seed + k - 1)  # other draws than the rounds before
        f_cfg = replace(feedback_cfg, samples=str(here / "sample" / "samples.jsonl"), out_dir=str(here / "feedback"))
        r_cfg = replace(reward_cfg, base_model=str(previous_reward), feedback=str(here / "feedback" / "feedback.jsonl"),
                        extra_feedback=list(feedback_files), out_dir=str(here / "reward"))
        p_cfg = replace(ppo_cfg, policy=str(previous_ppo / "model"), reward_model=str(here / "reward"),
                        out_dir=str(here / "ppo"))
        calls += [StageCall(f"sample-r{k}", s_cfg, lambda c=s_cfg: sample.run(c), [here / "sample"]),
                  StageCall(f"feedback-r{k}", f_cfg, lambda c=f_cfg: feedback.run(c), [here / "feedback"]),
                  StageCall(f"reward-r{k}", r_cfg, lambda c=r_cfg: reward.run(c), [here / "reward"]),
                  StageCall(f"ppo-r{k}", p_cfg, lambda c=p_cfg: ppo.run(c), [here / "ppo"])]
        feedback_files.append(f_cfg.out_dir + "/feedback.jsonl")
        previous_ppo, previous_reward = here / "ppo", here / "reward"
    return calls


def _without_deltas(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "deltas"}


def execute(stages: list[StageCall], manifest: Manifest, *, from_stage: str | None = None,
            only_stage: str | None = None, console: Any = None) -> dict[str, Any]:
    """Run the stages that are not done with their current fingerprint, in order."""
    from rich.console import Console

    console = console or Console()
    names = [s.name for s in stages]
    for flag, value in (("--from", from_stage), ("--only", only_stage)):
        if value is not None and value not in names:
            raise ConfigError(f"command line: {flag} {value!r} is not a stage ({', '.join(names)})")
    previous = ""
    invalid = False  # once a stage reruns, every later stage must rerun too
    results: dict[str, Any] = {}
    for index, stage in enumerate(stages):
        name = stage.name
        current = fingerprint(stage.section, previous)
        previous = current
        if only_stage and name != only_stage:
            continue
        forced = name == only_stage or (from_stage is not None and index >= names.index(from_stage))
        if not forced and not invalid and manifest.is_done(name, current) and all(p.exists() for p in stage.owned):
            console.print(f"[dim]{name}: done, skipped[/dim]")
            continue
        invalid = True
        entry = manifest.entry(name)
        interrupted = entry.get("fingerprint") == current and entry.get("status") in ("running", "failed")
        # The stage named by --only/--from resumes too when it was interrupted: a run killed at the end of a
        # session is restarted with the same flag, and must not throw away hours of samples or checkpoints.
        # Stages after it rerun from scratch (their input is being remade).
        resumable = interrupted and (not forced or name in (only_stage, from_stage))
        if not resumable:
            # Outputs made from other inputs are stale; an interrupted stage keeps them to resume.
            for path in stage.owned:
                shutil.rmtree(path, ignore_errors=True)
        else:
            console.print(f"{name}: resuming an interrupted run")
        console.rule(f"[bold]{name}")
        manifest.start(name, current, later=names[index + 1:])
        started = time.perf_counter()
        try:
            metrics = stage.call()
        except BaseException:
            manifest.mark(name, status="failed", seconds=round(time.perf_counter() - started, 1))
            raise
        seconds = round(time.perf_counter() - started, 1)
        manifest.mark(name, status="done", seconds=seconds, peak_rss_mib=peak_rss_mib(),
                      outputs=_outputs(stage.owned),
                      metrics=metrics if isinstance(metrics, dict) else {})
        results[name] = {"seconds": seconds}
        console.print(f"{name}: done in {seconds:.1f} s")
    return results


def run(cfg: PipelineConfig, *, from_stage: str | None = None, only_stage: str | None = None,
        force: bool = False, config_file: str | None = None) -> dict[str, Any]:
    if from_stage and only_stage:
        raise ConfigError("command line: --from and --only exclude each other")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.open(run_dir, to_dict(cfg), cfg.seed, config_file, force, machine(cfg.threads))
    return execute(stage_calls(cfg, run_dir), manifest, from_stage=from_stage, only_stage=only_stage)
