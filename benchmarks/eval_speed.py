"""Seconds to score Gorilla's 904 released HuggingFace answers with every metric.

    python benchmarks/eval_speed.py [--data DIR] [--repeat N]

Prints the wall time per metric and in total (best of N runs).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rlaif_code.evaluate import EvalConfig, evaluate


def main() -> None:
    parser = argparse.ArgumentParser()
    shared = Path(__file__).resolve().parents[2] / "shared" / "gorilla"
    parser.add_argument("--data", default=os.environ.get("RLAIF_DATA", str(shared)))
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    responses = Path(args.data) / "responses" / "response_huggingface_Gorilla_FT_0_shot.jsonl"
    best = None
    for _ in range(args.repeat):
        started = time.perf_counter()
        result = evaluate(EvalConfig(hub="hf", responses=str(responses), data=args.data, show_table=False))
        total = time.perf_counter() - started
        if best is None or total < best[0]:
            best = (total, result)
    total, result = best
    print(f"scored {result['n']} answers with {', '.join(result['seconds'])} in {total:.2f} s "
          f"({result['n'] / total:.1f} answers/s)")
    for name, seconds in result["seconds"].items():
        print(f"  {name:<10} {seconds:8.2f} s")
    print(f"  (loading, parsing and per-domain breakdown: {total - sum(result['seconds'].values()):.2f} s)")


if __name__ == "__main__":
    main()
