"""PPO seconds per step and peak memory: rlaif_code.ppo.stage against TRL 1.12.0's PPOTrainer.

    python benchmarks/ppo_speed.py [--models tiny,smollm2,smollm2-arch] [--steps 3] [--threads N]
                                   [--precision fp32,bf16] [--setup-trl] [--skip-trl]

Identical settings on both sides: the same policy, a reward model (the policy's
weights + a seeded scalar head, AutoModelForSequenceClassification num_labels=1) used
as TRL's value model too, the same Gorilla prompts, 8 rollouts per step, 64 new tokens,
temperature 0.7, 4 PPO epochs over one minibatch of 8, full fine-tuning, stopping at eos,
and the same precision: each `--precision` runs both sides in it (fp32, or bf16 mixed
precision: TRL's `bf16=True`, our `bf16: on`). Each side runs in a fresh process, so
peak memory is that process's own: peak RSS (VmHWM) on CPU, torch.cuda.max_memory_allocated
on GPU. Seconds per step = median over steps after the first (warm-up).

TRL 1.12.0 lives in its own virtualenv (`--setup-trl` makes it: .cache/trl112-venv,
gitignored) that installs only trl itself and reads torch, transformers, accelerate and
datasets from this project's venv through a .pth file, so both sides run the very same
torch and transformers.

The roofline line: the floating-point work a step cannot avoid (our rollouts' prompt and answer
tokens through the policy while sampling, the reference and the reward model once, and the
policy forward + backward in every PPO epoch; the LM head only where an answer token needs
logits; attention scores included), divided by this process's measured matmul throughput in
that precision: the time a step would take if every FLOP ran at matmul speed.

Differences that remain by design: we also stop at Gorilla's stop strings
("###Instruction", "\\n###"), which TRL cannot; the printed generated widths show how
many tokens each side generated per step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "ppo-bench"
TRL_VENV = REPO / ".cache" / "trl112-venv"
TRL_VERSION = "1.12.0"

BATCH, NEW_TOKENS, EPOCHS, TEMPERATURE, LR, KL_COEF = 8, 64, 4, 0.7, 1e-6, 0.05


# ---------------------------------------------------------------- assets


def gorilla_prompts(n: int = 64) -> list[str]:
    from rlaif_code.data.prompts import build_prompt

    data = Path(os.environ.get("RLAIF_DATA") or REPO.parent / "shared" / "gorilla")
    prompts = []
    with (data / "apibench" / "torchhub_eval.json").open() as handle:
        for line in handle:
            code = json.loads(line)["code"]
            instruction = code.split("###Instruction:", 1)[-1].split("###Output:", 1)[0].strip()
            prompts.append(build_prompt(instruction))
            if len(prompts) == n:
                break
    return prompts


def prepare(model: str) -> dict[str, str]:
    """Policy dir, reward model dir and prompts file for `model`, made once under .cache/ppo-bench."""
    import torch
    from transformers import AutoModelForSequenceClassification

    root = CACHE / model
    policy = root / "policy"
    reward = root / "reward"
    prompts = root / "prompts.jsonl"
    if model == "tiny":
        if not (policy / "config.json").is_file():
            sys.path.insert(0, str(REPO / "tests"))
            from tiny import save_tiny_causal_lm

            save_tiny_causal_lm(policy)
        policy_dir = policy
    elif model == "smollm2-arch":
        # SmolLM2-135M's shapes and tokenizer with random weights: step time and memory depend on
        # the shapes alone, so a machine without the GGUF (the GPU box) measures the same workload.
        # $RLAIF_BENCH_ARCH_DIR: a folder with just its config.json and tokenizer files.
        if not (policy / "config.json").is_file():
            from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

            from rlaif_code.core.models import resolve_model

            source_dir = os.environ.get("RLAIF_BENCH_ARCH_DIR") or resolve_model("smollm2-135m")
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source_dir)).save_pretrained(policy)
            AutoTokenizer.from_pretrained(source_dir).save_pretrained(policy)
        policy_dir = policy
    else:
        from rlaif_code.core.models import resolve_model

        policy_dir = Path(resolve_model("smollm2-135m"))
    source = reward / "made_from.txt"  # rebuilt when the policy it copies changes (e.g. a new conversion)
    made_from = f"{policy_dir} {(policy_dir / 'config.json').stat().st_mtime_ns}"
    if not source.is_file() or source.read_text() != made_from:
        torch.manual_seed(0)
        rm = AutoModelForSequenceClassification.from_pretrained(policy_dir, num_labels=1, dtype=torch.float32)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(policy_dir)
        rm.config.pad_token_id = tok.pad_token_id
        rm.save_pretrained(reward)
        tok.save_pretrained(reward)
        source.write_text(made_from)
    if not prompts.is_file():
        root.mkdir(parents=True, exist_ok=True)
        prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in gorilla_prompts()))
    return {"policy": str(policy_dir), "reward": str(reward), "prompts": str(prompts)}


def setup_trl_venv() -> Path:
    python = TRL_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([str(Path(sys.base_prefix) / "bin" / "python3"), "-m", "venv", str(TRL_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", f"trl=={TRL_VERSION}"], check=True)
        site = next((TRL_VENV / "lib").glob("python3*/site-packages"))
        ours = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p, "torch").is_dir())
        (site / "zz_rlaif_main_venv.pth").write_text(f"import site; site.addsitedir({str(ours)!r})\n")
    return python


# ---------------------------------------------------------------- workers (one fresh process each)


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
    parent's image at exec, which would charge the driver's memory to every worker."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return _peak_rss_mb()


def _baseline_rss_mb() -> float:
    return _peak_rss_mb()


def matmul_gflops(bf16: bool, device: str) -> float:
    """This process's matmul throughput at a transformer layer's shape (tokens x hidden x 4 hidden)."""
    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(2048, 576, dtype=dtype, device=device), torch.randn(576, 1536, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    repeats, start = 20, time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * 2048 * 576 * 1536 * repeats / (time.perf_counter() - start) / 1e9


def step_flops(config_dir: str, prompt_tokens: float, answer_tokens: float) -> float:
    """The FLOPs a step of ours cannot avoid, per the module docstring (shared value head: one network)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(config_dir)
    d, layers, vocab = c.hidden_size, c.num_hidden_layers, c.vocab_size
    kv = d * c.num_key_value_heads // c.num_attention_heads
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * c.intermediate_size  # q, o, k, v, gate/up/down weights
    tokens = BATCH * (prompt_tokens + answer_tokens)
    backbone = 2 * layers * per_layer * tokens + 2 * layers * 2 * d * tokens * (prompt_tokens + answer_tokens) / 2
    head = 2 * d * vocab * BATCH * answer_tokens
    forward = backbone + head  # one pass of the policy (or the reference) where logits are needed
    return forward + forward + backbone + EPOCHS * 3 * forward  # sampling, reference, reward, PPO epochs


def worker_ours(assets: dict[str, str], steps: int, out: str, bf16: bool) -> dict:
    import torch

    from rlaif_code.core.artifacts import read_jsonl
    from rlaif_code.core.models import load_tokenizer
    from rlaif_code.ppo import PPOConfig, run

    baseline = _baseline_rss_mb()
    cfg = PPOConfig(policy=assets["policy"], reward_model=assets["reward"], prompts_file=assets["prompts"],
                    out_dir=out, total_steps=steps, batch_size=BATCH, mini_batch_size=BATCH, grad_accum=1,
                    ppo_epochs=EPOCHS, max_new_tokens=NEW_TOKENS, temperature=TEMPERATURE, learning_rate=LR,
                    kl_coef=KL_COEF, kl_mode="fixed", kl_budget=None, dev_every=0, save_every=10**6, log_every=10**6,
                    bf16="on" if bf16 else "off")
    run(cfg)
    rows = read_jsonl(Path(out) / "metrics.jsonl")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_tokenizer(assets["policy"])
    prompts = [json.loads(line)["prompt"] for line in Path(assets["prompts"]).read_text().splitlines()]
    prompt_tokens = statistics.mean(len(ids) for ids in tokenizer(prompts)["input_ids"])
    gflops = matmul_gflops(bf16, device)
    roofline = [step_flops(assets["policy"], prompt_tokens, r["response_length"]) / (gflops * 1e9) for r in rows]
    return {"step_seconds": [r["step_seconds"] for r in rows], "generated_width": [r["generated_width"] for r in rows],
            "generate_seconds": [r["generate_seconds"] for r in rows],
            "step_cpu_seconds": [r["step_cpu_seconds"] for r in rows],
            "answer_tokens": [r["response_length"] for r in rows], "roofline_seconds": roofline,
            "matmul_gflops": gflops, "peak_mb": _peak_memory_mb(device), "baseline_rss_mb": baseline, "device": device}


def worker_trl(assets: dict[str, str], steps: int, out: str, bf16: bool) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    assert trl.__version__ == TRL_VERSION, trl.__version__
    baseline = _baseline_rss_mb()
    cuda = torch.cuda.is_available()
    tok = AutoTokenizer.from_pretrained(assets["policy"], padding_side="left")
    prompts = [json.loads(line)["prompt"] for line in Path(assets["prompts"]).read_text().splitlines()]
    dataset = Dataset.from_dict({"input_ids": [tok(p)["input_ids"] for p in prompts]})
    policy = AutoModelForCausalLM.from_pretrained(assets["policy"], dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(assets["policy"], dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(assets["reward"], num_labels=1, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(assets["reward"], num_labels=1, dtype=torch.float32)
    widths: list[int] = []
    generate_seconds: list[float] = []
    generate = policy.generate

    def counting_generate(*args, **kwargs):
        start = time.perf_counter()
        result = generate(*args, **kwargs)
        generate_seconds.append(time.perf_counter() - start)
        sequences = result.sequences if hasattr(result, "sequences") else result
        widths.append(sequences.shape[1] - kwargs["input_ids"].shape[1])
        return result

    policy.generate = counting_generate
    step_ends: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append((time.perf_counter(), time.process_time()))

    args = PPOConfig(output_dir=out, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
                     num_mini_batches=1, num_ppo_epochs=EPOCHS, total_episodes=BATCH * steps,
                     response_length=NEW_TOKENS, temperature=TEMPERATURE, stop_token="eos", learning_rate=LR,
                     kl_coef=KL_COEF, local_rollout_forward_batch_size=BATCH, num_sample_generations=0,
                     report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True, bf16=bf16, use_cpu=not cuda,
                     seed=0)
    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                         value_model=value, train_dataset=dataset, eval_dataset=dataset, callbacks=[Clock()])
    start = (time.perf_counter(), time.process_time())
    trainer.train()
    ends = [start, *step_ends]
    return {"step_seconds": [b[0] - a[0] for a, b in zip(ends, ends[1:])], "generated_width": widths,
            "step_cpu_seconds": [b[1] - a[1] for a, b in zip(ends, ends[1:])],
            "generate_seconds": generate_seconds,
            "peak_mb": _peak_memory_mb("cuda" if cuda else "cpu"), "baseline_rss_mb": baseline,
            "device": "cuda" if cuda else "cpu"}


# ---------------------------------------------------------------- driver


def run_worker(python: str, side: str, assets: dict[str, str], steps: int, threads: int | None,
               precision: str) -> dict:
    import tempfile

    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory(prefix=f"ppo-bench-{side}-") as out:
        proc = subprocess.run([python, __file__, "--worker", side, "--assets", json.dumps(assets),
                               "--steps", str(steps), "--out", out, "--precision", precision],
                              env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(result: dict) -> dict[str, float]:
    """Medians over the steps after the first (warm-up): wall and CPU seconds per step; peak memory."""
    def median(values: list[float]) -> float:
        return statistics.median(values[1:] or values)

    return {"seconds": median(result["step_seconds"]), "cpu_seconds": median(result["step_cpu_seconds"]),
            "peak_mb": result["peak_mb"]}


def trl_python(setup: bool) -> str | None:
    if setup:
        return str(setup_trl_venv())
    python = TRL_VENV / "bin" / "python"
    return str(python) if python.exists() else None


def measure(model: str, steps: int, threads: int | None, trl: str | None, precision: str) -> dict[str, dict]:
    """{"ours": worker result, "trl": worker result (absent without a TRL venv)} for one model."""
    assets = prepare(model)
    results = {"ours": run_worker(sys.executable, "ours", assets, steps, threads, precision)}
    if trl is not None:
        results["trl"] = run_worker(trl, "trl", assets, steps, threads, precision)
    return results


def _line(name: str, result: dict) -> str:
    summary = summarize(result)
    extra = ""
    if "answer_tokens" in result:
        extra = f", mean answer {', '.join(f'{n:.1f}' for n in result['answer_tokens'])} tokens"
    return (f"  {name:<15}: {summary['seconds']:8.2f} s/step wall, {summary['cpu_seconds']:8.2f} s/step CPU, "
            f"peak {summary['peak_mb']:7.0f} MiB\n"
            f"{'':19}steps {', '.join(f'{s:.1f}' for s in result['step_seconds'])} s wall "
            f"({', '.join(f'{s:.1f}' for s in result['step_cpu_seconds'])} s CPU), generation "
            f"{', '.join(f'{s:.1f}' for s in result['generate_seconds'])} s; generated widths "
            f"{result['generated_width']}{extra}; RSS after imports {result['baseline_rss_mb']:.0f} MiB")


def report(model: str, precision: str, results: dict[str, dict]) -> None:
    ours_result = results["ours"]
    print(f"\n[{model}, {precision}] device {ours_result['device']}")
    print(_line("rlaif_code.ppo.stage", ours_result))
    roofline = statistics.median(ours_result["roofline_seconds"][1:] or ours_result["roofline_seconds"])
    print(f"{'':19}FLOP roofline {roofline:.2f} s/step at {ours_result['matmul_gflops']:.0f} GFLOP/s "
          f"(measured matmul, {precision}): measured / roofline {summarize(ours_result)['seconds'] / roofline:.1f}x")
    if "trl" not in results:
        return
    print(_line(f"TRL {TRL_VERSION}", results["trl"]))
    ours, trl = summarize(results["ours"]), summarize(results["trl"])
    print(f"  ratio ours/TRL: time {ours['seconds'] / trl['seconds']:.2f}x wall (target <= 0.45), "
          f"{ours['cpu_seconds'] / trl['cpu_seconds']:.2f}x CPU; "
          f"peak memory {ours['peak_mb'] / trl['peak_mb']:.2f}x (target <= 0.55)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,smollm2")
    parser.add_argument("--steps", type=int, default=3, help="PPO steps per run (the first is warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for both sides")
    parser.add_argument("--setup-trl", action="store_true", help=f"create the trl=={TRL_VERSION} venv if missing")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--precision", default="fp32,bf16",
                        help="comma list of fp32 / bf16: each runs both sides in that precision")
    parser.add_argument("--json", default=None, help="also write every measurement to this JSON file")
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--assets", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        logging.disable(logging.WARNING)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        work = worker_ours if args.worker == "ours" else worker_trl
        print(json.dumps(work(json.loads(args.assets), args.steps, args.out, args.precision == "bf16")))
        return

    trl = None if args.skip_trl else trl_python(args.setup_trl)
    if trl is None and not args.skip_trl:
        print(f"TRL venv not found at {TRL_VENV}: run with --setup-trl (or --skip-trl)")
    print(f"PPO step: batch {BATCH}, {NEW_TOKENS} new tokens, {EPOCHS} PPO epochs, {args.steps} steps per run, "
          f"threads {args.threads or 'default'}")
    everything: dict[str, dict] = {}
    for model in args.models.split(","):
        for precision in args.precision.split(","):
            if precision not in ("fp32", "bf16"):
                raise SystemExit(f"--precision: unknown {precision!r} (fp32 or bf16)")
            everything[f"{model}/{precision}"] = measure(model, args.steps, args.threads, trl, precision)
            report(model, precision, everything[f"{model}/{precision}"])
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=2) + "\n")


if __name__ == "__main__":
    main()
