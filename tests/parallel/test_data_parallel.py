"""Data parallel: each training stage under `accelerate launch` with two CPU processes (gloo) against
one process with the same global batch.

How two processes are launched on a machine without GPUs: `accelerate launch --cpu` starts a single
process (more need mpirun), so the tests launch with the shipped `configs/accelerate/multi_gpu.yaml`
and `ACCELERATE_USE_CPU=true`: torchrun starts the processes, and Accelerate and the Trainer put them
in one gloo group on the CPU. The one-process runs are `rlaif_code.cli.main` in the test's own process
(starting Python and torch costs more than these runs), on the CPU with one thread, as each launched one.

Equivalence of SFT and the reward model (tolerance `REL_TOL`): one process with batch_size 4 and two
with batch_size 2 see the same rows in each optimizer step (the Trainer's seeded sampler draws one
order, and Accelerate gives process k the k-th per-process batch of each step), the losses average
the same way (SFT: transformers' `average_tokens_across_devices` divides by the token count over all
processes; reward: a mean over rows, equal per-process batches, gradients averaged), so the updates
agree up to float32 summation order. Measured ||w2 - w1|| / ||w1 - w0||: 6e-7 for SFT, 7e-6 for the
reward model, 7e-7 with its balanced sampler; another data order (seed) differs by about 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rlaif_code.core.artifacts import atomic_write_jsonl, file_sha256, read_jsonl, read_stage_record
from tiny import REPO_ROOT, gorilla_dir, make_data_dir

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch",
          "--config_file", str(REPO_ROOT / "configs" / "accelerate" / "multi_gpu.yaml"), "--num_processes", "2"]
LR = 1e-3  # Adam's first steps move every weight with a gradient by about this much
REL_TOL = 1e-4  # ||update(2 processes) - update(1 process)|| / ||update(1 process)||
ABS_TOL = 1e-5  # the largest difference of any one weight (observed: 1.2e-6 at most)


def _env() -> dict[str, str]:
    env = dict(os.environ, RLAIF_DATA=str(gorilla_dir()), OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true",
               TOKENIZERS_PARALLELISM="false")
    env.pop("MASTER_PORT", None)  # the launcher's config picks a free port
    return env


def rlaif(processes: int, *argv: str, timeout: float = 300) -> None:
    """`rlaif ARGV` in `processes` processes under accelerate launch, or, for one, in this one (with one
    thread and on the CPU, as each launched process; it saves starting Python and torch again)."""
    if processes == 1:
        return _in_this_process(argv)
    cmd = [*LAUNCH[:-1], str(processes), "-m", "rlaif_code.cli", *argv]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{output[-6000:]}"


def _in_this_process(argv: tuple[str, ...]) -> None:
    import torch
    from accelerate.state import AcceleratorState

    from rlaif_code.cli import main

    threads, use_cpu = torch.get_num_threads(), os.environ.get("ACCELERATE_USE_CPU")
    os.environ["ACCELERATE_USE_CPU"] = "true"
    AcceleratorState._reset_state(reset_partial_state=True)  # an earlier test's state must not pick the device
    torch.set_num_threads(1)
    try:
        assert main(list(argv)) == 0
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(reset_partial_state=True)
        if use_cpu is None:
            os.environ.pop("ACCELERATE_USE_CPU")
        else:
            os.environ["ACCELERATE_USE_CPU"] = use_cpu


def weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return {name: tensor.double() for name, tensor in load_file(path / "model.safetensors").items()}


def update_difference(one: Path, two: Path, base: Path) -> dict[str, float]:
    """How far two runs' final weights are apart, relative to how far training moved them from `base`
    (tensors `base` lacks, such as the reward head, count in the absolute figure only)."""
    w1, w2, w0 = weights(one), weights(two), weights(base)
    assert w1.keys() == w2.keys()
    diff_sq = sum(float(((w2[k] - w1[k]) ** 2).sum()) for k in w1 if k in w0)
    move_sq = sum(float(((w1[k] - w0[k]) ** 2).sum()) for k in w1 if k in w0)
    return {"relative": (diff_sq / move_sq) ** 0.5, "max_abs": max(float((w2[k] - w1[k]).abs().max()) for k in w1),
            "max_move": max(float((w1[k] - w0[k]).abs().max()) for k in w1 if k in w0)}


def assert_same_update(one: Path, two: Path, base: Path) -> dict[str, float]:
    diff = update_difference(one, two, base)
    assert diff["max_move"] > LR / 2, f"training barely moved the weights: {diff}"
    assert diff["relative"] < REL_TOL and diff["max_abs"] < ABS_TOL, diff
    return diff


def assert_written_once(out: Path, stage: str, outputs: tuple[str, ...]) -> dict[str, Any]:
    """The main process wrote the final files, and stage.json's digests are those of the files on disk."""
    record = read_stage_record(out)
    assert record["stage"] == stage and record["finished"]
    for name in outputs:
        assert record["outputs"][name] == file_sha256(out / name), f"{out / name} changed after stage.json"
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    return record


@pytest.fixture(scope="module")
def work(tmp_path_factory, gorilla_data, tiny_dir) -> dict[str, Path]:
    """A tiny data-stage output, a feedback file (each reference answer, and a copy without its
    api_call line), and the tiny base model."""
    root = tmp_path_factory.mktemp("dp")
    data = make_data_dir(root / "data", gorilla_data, max_train=8, max_eval=2)
    rows = []
    for example in read_jsonl(data / "train.jsonl"):
        good = example["target"]
        bad = "\n".join(line for line in good.split("\n") if "api_call" not in line)
        for sample_id, (text, label) in enumerate(((good, "accepted"), (bad, "rejected"))):
            rows.append({"example_id": example["example_id"], "sample_id": sample_id, "prompt": example["prompt"],
                         "text": text, "label": label})
    atomic_write_jsonl(root / "feedback.jsonl", rows)
    return {"root": root, "data": data, "feedback": root / "feedback.jsonl", "tiny": tiny_dir}


# ---------------------------------------------------------------- SFT and the reward model


def _sft(work: dict[str, Path], processes: int, name: str) -> Path:
    out = work["root"] / name
    rlaif(processes, "sft", "--model", str(work["tiny"]), "--data_dir", str(work["data"]), "--out_dir", str(out),
          "--max_steps", "2", "--batch_size", str(4 // processes), "--max_length", "256", "--learning_rate", str(LR),
          "--logging_steps", "1", "--save_steps", "2", "--report_to", "tensorboard", "--seed", "0",
          "--bf16", "off")  # float32: bf16 rounding (auto on an AMX CPU) is larger than the tolerance
    return out


def test_sft_two_processes_make_the_update_of_one(work):
    one, two = _sft(work, 1, "sft-1"), _sft(work, 2, "sft-2")
    assert_same_update(one, two, work["tiny"])
    m1 = assert_written_once(one, "sft", ("model.safetensors", "config.json"))["metrics"]
    m2 = assert_written_once(two, "sft", ("model.safetensors", "config.json"))["metrics"]
    # Two steps of a global batch of 4 over 8 rows: the same rows, so the same number of tokens.
    assert m1["global_step"] == m2["global_step"] == 2
    assert m1["train_tokens"] == m2["train_tokens"] > 0
    assert m2["train_loss"] == pytest.approx(m1["train_loss"], rel=1e-5)
    assert len(list((two / "tb").glob("events.out.tfevents.*"))) == 1, "TensorBoard: the main process only"
    checkpoint = two / "checkpoints" / "checkpoint-2"
    assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert (two / "checkpoints" / "run_identity.json").is_file()


@pytest.fixture(scope="module")
def reward_one(work) -> Path:
    """The reward stage in one process (also PPO's reward model below)."""
    return _reward(work, 1, "reward-1")


def _reward(work: dict[str, Path], processes: int, name: str, *extra: str) -> Path:
    out = work["root"] / name
    rlaif(processes, "reward", "--base_model", str(work["tiny"]), "--feedback", str(work["feedback"]),
          "--out_dir", str(out), "--max_steps", "2", "--batch_size", str(4 // processes), "--max_length", "256",
          "--learning_rate", str(LR), "--heldout_fraction", "0.25", "--logging_steps", "1", "--report_to", "none",
          "--seed", "0", "--bf16", "off", "--synthetic_data_dir", str(work["data"]), *extra)
    return out


def test_reward_two_processes_make_the_update_of_one(work, reward_one):
    two = _reward(work, 2, "reward-2")
    assert_same_update(reward_one, two, work["tiny"])
    m1 = assert_written_once(reward_one, "reward", ("model.safetensors", "config.json"))["metrics"]
    m2 = assert_written_once(two, "reward", ("model.safetensors", "config.json"))["metrics"]
    assert m1["n_train"] == m2["n_train"] == 12 + m1["n_synthetic"] and m1["global_step"] == m2["global_step"] == 2
    assert m2["train_loss"] == pytest.approx(m1["train_loss"], rel=1e-5)
    # The held-out scores come from the same weights.
    assert m2["heldout_roc_auc"] == m1["heldout_roc_auc"]


def test_reward_model_is_the_same_in_every_run(work, reward_one):
    """The new scalar head is drawn from the seeded generator: before that was fixed, two
    one-process runs (and so one and two processes) differed by the head's random init."""
    again = _reward(work, 1, "reward-1-again")
    assert update_difference(reward_one, again, work["tiny"])["max_abs"] == 0.0


def test_balanced_sampler_shards_the_same_rows(work):
    """`balance: sampler` replaces the Trainer's sampler with a seeded WeightedRandomSampler: every
    process draws the same rows and Accelerate gives each its share."""
    one = _reward(work, 1, "reward-sampler-1", "--balance", "sampler")
    two = _reward(work, 2, "reward-sampler-2", "--balance", "sampler")
    assert_same_update(one, two, work["tiny"])


# ---------------------------------------------------------------- the pipeline


def test_pipeline_runs_one_stage_under_accelerate(work, tmp_path):
    """`rlaif run --only sft` under accelerate launch: every process clears the stage's folder before
    running it, so the stage waits for all of them before writing (its checkpoint claim survives)."""
    from rlaif_code.cli import main

    config = tmp_path / "run.yaml"
    run_dir = tmp_path / "run"
    config.write_text(json.dumps({
        "run_dir": str(run_dir), "seed": 0, "data": {"hub": "th", "split": "given", "max_train": 8, "max_eval": 2},
        "sft": {"model": str(work["tiny"]), "max_steps": 1, "batch_size": 2, "max_length": 256,
                "learning_rate": LR, "report_to": "none"}}))
    assert main(["run", "--config", str(config), "--only", "data"]) == 0
    rlaif(2, "run", "--config", str(config), "--only", "sft")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {name: entry["status"] for name, entry in manifest["stages"].items()} == {"data": "done", "sft": "done"}
    assert_written_once(run_dir / "sft", "sft", ("model.safetensors", "config.json"))
    assert (run_dir / "sft" / "checkpoints" / "run_identity.json").is_file()
    assert manifest["stages"]["sft"]["outputs"][str(run_dir / "sft" / "model.safetensors")] == \
        file_sha256(run_dir / "sft" / "model.safetensors")


# ---------------------------------------------------------------- PPO


def _ppo(work: dict[str, Path], reward_model: Path, processes: int, name: str) -> Path:
    out = work["root"] / name
    per_process = str(4 // processes)
    rlaif(processes, "ppo", "--policy", str(work["tiny"]), "--reward_model", str(reward_model),
          "--data_dir", str(work["data"]), "--out_dir", str(out), "--total_steps", "2", "--batch_size", per_process,
          "--mini_batch_size", per_process, "--ppo_epochs", "1", "--max_new_tokens", "6", "--learning_rate", str(LR),
          "--save_every", "1", "--bf16", "off", "--seed", "0", "--dev_every", "0")
    return out


@pytest.fixture(scope="module")
def ppo_runs(work, reward_one) -> tuple[Path, Path]:
    return _ppo(work, reward_one, 1, "ppo-1"), _ppo(work, reward_one, 2, "ppo-2")


def test_ppo_runs_under_two_processes(ppo_runs):
    _, two = ppo_runs
    record = assert_written_once(two, "ppo", ("metrics.jsonl",))
    assert record["metrics"]["steps"] == 2
    assert [row["step"] for row in read_jsonl(two / "metrics.jsonl")] == [1, 2], "one row per step, one writer"
    assert_written_once(two / "model", "ppo", ())
    last = two / "checkpoints" / "step-000002"
    assert {p.name for p in last.glob("rng-*.pt")} == {"rng-0.pt", "rng-1.pt"}
    assert len(list((two / "tb").glob("events.out.tfevents.*"))) == 1


# Rollouts gathered over all processes: what one process with the whole batch also reports.
GLOBAL_METRICS = ("reward_mean", "reward_std", "penalized_reward_mean", "kl", "incomplete_fraction")


def test_ppo_two_processes_make_the_update_of_one(work, ppo_runs):
    """Rollouts are seeded per (seed, step, place among the step's prompts), advantages are whitened
    with statistics summed over processes, and each process's token-mean loss is weighted by its share
    of the tokens: what is left to differ between 1 and 2 processes is summation order."""
    one, two = ppo_runs
    rows1, rows2 = read_jsonl(one / "metrics.jsonl"), read_jsonl(two / "metrics.jsonl")
    for r1, r2 in zip(rows1, rows2, strict=True):
        for key in GLOBAL_METRICS:
            assert r2[key] == pytest.approx(r1[key], rel=1e-4, abs=1e-5), (r1["step"], key)
    assert_same_update(one / "model", two / "model", work["tiny"])
