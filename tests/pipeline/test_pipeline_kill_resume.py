"""`rlaif run` killed with SIGKILL inside every stage, rerun each time, ends with the same artifacts
and figures as an unbroken run; after every kill the manifest shows no unfinished stage as done.

Both runs use the same run directory path (configs, which carry paths, are then equal) and compare
what a stage produced: data, samples, labels, model weights, eval figures, PPO's per-step metrics
and the report's tables; wall-clock timings are the only thing left out.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tiny import REPO_ROOT, tiny_pipeline_config

STAGES = ("data", "sft", "sample", "feedback", "reward", "rft", "ppo", "evaluate", "report")
# timings, and memory, which depends on what the process did before (a resumed process did less)
TIMING_KEYS = ("seconds", "wall_time_s", "tokens_per_s", "finished_at", "started", "rss_mb", "rss_mib")
# Small batches and more PPO steps stretch sampling and PPO, so a kill lands mid-stage there.
SECTIONS = {"sample": {"batch_size": 1}, "ppo": {"total_steps": 4, "save_every": 1}}

RUNNER = """
import sys
sys.path.insert(0, {tests!r})
from tiny import register_digit_check
register_digit_check()
from rlaif_code.cli import main
sys.exit(main(["run", "--config", {config!r}]))
"""


def _launch(config: Path) -> subprocess.Popen:
    code = RUNNER.format(tests=str(REPO_ROOT / "tests"), config=str(config))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def _stages(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "manifest.json").read_text())["stages"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items()
                if not any(t in k for t in TIMING_KEYS) and not k.endswith("_seconds")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def fingerprint(run_dir: Path) -> dict[str, Any]:
    """What the stages made, less wall-clock times."""
    out: dict[str, Any] = {}
    for pattern in ("data/*.jsonl", "sample/samples.jsonl", "feedback/feedback.jsonl", "sft/model.safetensors",
                    "reward/model.safetensors", "rft/model/model.safetensors", "ppo/model/model.safetensors",
                    "ppo/dev.jsonl", "samples/*/samples.jsonl",
                    "samples/*.jsonl"):
        for path in sorted(run_dir.glob(pattern)):
            out[str(path.relative_to(run_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    for path in sorted(run_dir.glob("eval/*.json")):
        out[str(path.relative_to(run_dir))] = _without_timings(json.loads(path.read_text()))
    rows = [json.loads(line) for line in (run_dir / "ppo" / "metrics.jsonl").read_text().splitlines()]
    out["ppo/metrics.jsonl"] = _without_timings(rows)
    report = (run_dir / "report" / "report.md").read_text().splitlines()
    # The stage-time table and the reward stage's wall time are timings; every other line must match.
    out["report.md"] = [line for line in report if "wall_time_s" not in line
                        and not (line.startswith("| ") and line.split("|")[1].strip() in STAGES)]
    return out


def test_a_run_killed_inside_every_stage_finishes_with_the_figures_of_an_unbroken_run(tmp_path: Path) -> None:
    config = tiny_pipeline_config(tmp_path, **SECTIONS)
    run_dir = tmp_path / "run"
    unbroken = _launch(config)
    assert unbroken.wait(timeout=600) == 0, unbroken.stderr.read().decode()[-3000:]
    expected = fingerprint(run_dir)
    shutil.rmtree(run_dir)

    killed_in = []
    for stage in STAGES:
        process = _launch(config)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if _stages(run_dir).get(stage, {}).get("status") == "running":
                if stage in ("sample", "ppo"):  # wait until it has written work to resume from
                    partial = run_dir / ("sample/samples.jsonl" if stage == "sample" else "ppo/checkpoints")
                    if not (partial.exists() and any(partial.iterdir() if partial.is_dir() else [1])):
                        time.sleep(0.005)
                        continue
                os.killpg(process.pid, signal.SIGKILL)
                killed_in.append(stage)
                break
            time.sleep(0.005)
        process.wait(timeout=60)
        stages = _stages(run_dir)
        if killed_in[-1:] == [stage]:  # the manifest never calls a stage done that did not finish
            assert stages[stage]["status"] == "running", stages[stage]
        assert all(stages[s]["status"] == "done" for s in STAGES[:STAGES.index(stage)])
    final = _launch(config)
    assert final.wait(timeout=600) == 0, final.stderr.read().decode()[-3000:]
    assert killed_in == list(STAGES)  # every kill landed inside its stage
    stages = _stages(run_dir)
    assert all(stages[s]["status"] == "done" for s in STAGES)
    assert stages["sample"]["runs"] == 2 and stages["ppo"]["runs"] == 2  # resumed, not started over
    assert fingerprint(run_dir) == expected
