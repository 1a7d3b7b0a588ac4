"""Generation tokens/s: the sample stage's decoding loop against the earlier path, on the same prompts.

    python benchmarks/sample_speed.py [--model smollm2-135m] [--prompts 48] [--samples 2] [--quick]
                                      [--new-batch 128] [--bf16] [--constrained] [--data DIR]

Both sides answer the same TorchHub training prompts (the data stage's train.jsonl), each
`--samples` times (by default the demo's sample stage: 48 x 2), at temperature 0.9, top_p 0.95,
in one process, one after the other:

- old: `generate_batch_hf` (transformers' `generate` with its stop-string criteria) in batches
  of 8 (the demo's sample batch size) or 16 (torchhub-cpu's), prompts in file order, seeded per
  batch: what the sample stage did before.
- new: `generate_stream` (our KV-cache loop: rows leave the batch as they end and waiting prompts
  take their place, nucleus among the top candidates), prompts sorted by length, `--new-batch`
  answers in flight, seeded per answer: what the sample stage does now.

Two settings: the demo's (160 new tokens) and full TorchHub's (192). Tokens/s counts the tokens
each answer kept (up to and including its end token) over the seconds spent generating; answers
differ between the sides (other random draws), so the table shows their mean length too.
`--quick` (~1 minute): 12 prompts, 64 new tokens, a smoke check: 24 short answers fill few of the
new path's slots, so its ratio understates what a stage's workload gets. `--bf16` adds the new path with bfloat16
weights (the sample stage's `dtype: auto` picks bfloat16 on a CPU with AMX, float32 on other CPUs; both
sides of the reference comparison run in float32 so the ratio measures the decoder, not the dtype).
`--constrained` adds the new path with the API constraint of TorchHub's database (`sample/constrained.py`) and
its tokens/s over the unconstrained new path's; it acts only inside api_call and code fields, so give `--model`
a TorchHub SFT model.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

SETTINGS = {"demo": (160, 8), "torchhub": (192, 16)}  # name: (max_new_tokens, old batch size)
TEMPERATURE, TOP_P = 0.9, 0.95


def training_prompts(data: str, n: int) -> list[dict[str, Any]]:
    from rlaif_code.data import DataConfig, load_split
    from rlaif_code.data import run as run_data

    out = Path(tempfile.mkdtemp(prefix="sample-speed-")) / "data"
    run_data(DataConfig(hub="th", data=data, max_train=n, max_eval=1, out_dir=str(out)))
    return load_split(out, "train")[:n]


def old_path(model: Any, tokenizer: Any, work: list[tuple[dict[str, Any], int]], max_new: int,
             batch_size: int) -> list[Any]:
    from transformers import set_seed

    from rlaif_code.sample.generate import generate_batch_hf

    results = []
    for start in range(0, len(work), batch_size):
        batch = work[start:start + batch_size]
        set_seed(start)
        results += generate_batch_hf(model, tokenizer, [row["prompt"] for row, _ in batch], max_new_tokens=max_new,
                                     temperature=TEMPERATURE, top_p=TOP_P)
    return results


def new_path(model: Any, tokenizer: Any, work: list[tuple[dict[str, Any], int]], max_new: int,
             batch_size: int, api_calls: list[str] | None = None) -> list[Any]:
    from rlaif_code.sample.constrained import api_constraint
    from rlaif_code.sample.generate import generate_stream
    from rlaif_code.sample.sampling import row_seed
    from rlaif_code.sample.stage import in_length_order

    ordered = in_length_order(work, tokenizer, 1024)
    hook = api_constraint(api_calls, tokenizer) if api_calls is not None else None
    return [generation for _, generation in generate_stream(
        model, tokenizer, [row["prompt"] for row, _ in ordered], batch_size=batch_size, max_new_tokens=max_new,
        temperature=TEMPERATURE, top_p=TOP_P, seeds=[row_seed(0, row["example_id"], sample_id)
                                                     for row, sample_id in ordered], adjust_logits=hook)]


def measure(label: str, path: Callable[..., list[Any]], *args: Any) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    results = path(*args)
    seconds = time.perf_counter() - start
    tokens = sum(g.n_tokens for g in results)
    row = {"label": label, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
           "mean_tokens": tokens / len(results), "finished": sum(g.finished for g in results) / len(results),
           "load": (load_before + os.getloadavg()[0]) / 2}
    print(f"  {label:<34} {row['tokens_per_s']:7.1f} tok/s  {tokens:6d} tokens in {seconds:6.1f} s  "
          f"mean answer {row['mean_tokens']:5.1f} tokens, {100 * row['finished']:3.0f}% ended  "
          f"load {row['load']:.2f}", flush=True)
    return row


def main() -> None:
    import torch

    from rlaif_code.core.models import load_causal_lm

    parser = argparse.ArgumentParser()
    shared = Path(__file__).resolve().parents[2] / "shared" / "gorilla"
    parser.add_argument("--data", default=os.environ.get("RLAIF_DATA", str(shared)))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--new-batch", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="12 prompts, 64 new tokens: about a minute")
    parser.add_argument("--bf16", action="store_true", help="also run the new path with bfloat16 weights")
    parser.add_argument("--constrained", action="store_true",
                        help="also run the new path with TorchHub's API constraint (sample.constrain_api); "
                             "give --model a TorchHub SFT model, whose answers have the fields it acts in")
    args = parser.parse_args()
    n_prompts = 12 if args.quick else args.prompts
    work = [(row, sample_id) for row in training_prompts(args.data, n_prompts) for sample_id in range(args.samples)]
    model, tokenizer = load_causal_lm(args.model, dtype="float32", device="cpu", padding_side="left")
    model.eval()
    models = {"float32": model}
    if args.bf16:
        models["bfloat16"] = load_causal_lm(args.model, dtype="bfloat16", device="cpu", padding_side="left")[0].eval()
    api_calls = None
    if args.constrained:
        from rlaif_code.data.apibench import api_database

        api_calls = [row["api_call"] for row in api_database(args.data, "th")]
    for warm in models.values():  # first calls build the stop criteria, the '#' token set and the token texts
        new_path(warm, tokenizer, work[:2], 4, 2, api_calls)
    old_path(model, tokenizer, work[:2], 4, 2)
    print(f"{len(work)} answers ({n_prompts} TorchHub training prompts x {args.samples}), temperature {TEMPERATURE}, "
          f"top_p {TOP_P}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, model {args.model}")
    summary = []
    for name, (max_new, old_batch) in SETTINGS.items():
        max_new = 64 if args.quick else max_new
        print(f"{name}: {max_new} new tokens")
        old = measure(f"old: HF generate, batch {old_batch}", old_path, model, tokenizer, work, max_new, old_batch)
        new = measure(f"new: our loop, {args.new_batch} in flight", new_path, model, tokenizer, work, max_new,
                      args.new_batch)
        summary.append((name, old, new))
        if api_calls is not None:
            constrained = measure(f"new, API-constrained, {args.new_batch} in flight", new_path, model, tokenizer,
                                  work, max_new, args.new_batch, api_calls)
            print(f"  constrained/new tokens/s: {constrained['tokens_per_s'] / new['tokens_per_s']:.2f}x")
        if args.bf16:
            measure(f"new, bfloat16 weights, {args.new_batch} in flight", new_path, models["bfloat16"], tokenizer, work,
                    max_new, args.new_batch)
    print("\nsetting    old tok/s   new tok/s   new/old")
    for name, old, new in summary:
        print(f"{name:<10} {old['tokens_per_s']:9.1f}   {new['tokens_per_s']:9.1f}   "
              f"{new['tokens_per_s'] / old['tokens_per_s']:6.2f}x")


if __name__ == "__main__":
    main()
