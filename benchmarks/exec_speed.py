"""Executability speed: snippets/s of the sandbox over APIBench's reference code.

Runs every tier (parse, static, run) on the reference `code` of a hub's eval file
(HuggingFace: 911 snippets) in hermetic mode, once per worker count, and prints the
throughput and the executability rate per tier it found (the control of `rlaif eval
--exec`). Needs the exec env (`rlaif exec-env`) and the Gorilla data ($RLAIF_DATA or
--data).

    python benchmarks/exec_speed.py                     # hf, all 911, 1 and 2 workers
    python benchmarks/exec_speed.py --hub th --workers 2
    python benchmarks/exec_speed.py --limit 100 --workers 1 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import Counter

from rlaif_code.data.apibench import load_eval_examples
from rlaif_code.data.source import DataSource
from rlaif_code.sandbox.env import find_exec_python
from rlaif_code.sandbox.hub_ids import known_hub_ids
from rlaif_code.sandbox.runner import Limits, Sandbox, detect_isolation
from rlaif_code.sandbox.tiers import ExecutabilityChecker, summarize, tiers_up_to


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hub", default="hf", choices=["hf", "tf", "th"])
    parser.add_argument("--data", default=None, help="Gorilla data dir (default: $RLAIF_DATA)")
    parser.add_argument("--env", default=None, help="exec env dir (default: $RLAIF_EXEC_ENV or the cache)")
    parser.add_argument("--mode", default="hermetic", choices=["hermetic", "real"])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--limit", type=int, default=None, help="a seeded sample of this many snippets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--tier", default="run", choices=["parse", "static", "run"],
                        help="stop at this tier (static alone is one import probe: fast)")
    parser.add_argument("--out", default=None, help="write the measurements (and per-snippet verdicts) as JSON")
    args = parser.parse_args()

    source = DataSource.resolve(args.data)
    examples = load_eval_examples(source, args.hub)
    if args.limit is not None and args.limit < len(examples):
        examples = sorted(random.Random(args.seed).sample(examples, args.limit), key=lambda e: e.question_id)
    codes = [e.code for e in examples]
    known = known_hub_ids(source) if args.mode == "hermetic" else None
    python = find_exec_python(args.env)
    print(f"{len(codes)} reference snippets of {args.hub}; mode {args.mode}; isolation {detect_isolation()}; "
          f"interpreter {python}; {os.cpu_count()} CPUs", flush=True)
    runs = []
    for workers in [int(w) for w in args.workers.split(",")]:
        with Sandbox(python, mode=args.mode, known_ids=known, limits=Limits(timeout=args.timeout)) as sandbox:
            checker = ExecutabilityChecker(sandbox, workers=workers)
            started = time.perf_counter()
            state = {"done": 0, "shown": started}

            def progress(_index: int, _result: object, state: dict = state, started: float = started) -> None:
                state["done"] += 1
                if time.perf_counter() - state["shown"] > 60:
                    state["shown"] = time.perf_counter()
                    print(f"  ... {state['done']}/{len(codes)} run, {state['shown'] - started:.0f} s", flush=True)

            verdicts = checker.check(codes, args.tier, progress=progress)
            seconds = time.perf_counter() - started
        summary = summarize(verdicts, args.tier)
        durations = sorted(v.duration for v in verdicts if v.duration is not None)
        median = durations[len(durations) // 2] if durations else 0.0
        print(f"\nworkers={workers}, tiers up to {args.tier}: {len(codes)} snippets in {seconds:.1f} s = "
              f"{len(codes) / seconds:.3f} snippets/s (median run {median:.2f} s per snippet)")
        print("  executability per tier: " + "  ".join(f"{t} {summary[t]:.1%}" for t in tiers_up_to(args.tier)))
        if args.tier != "parse":
            print(f"  static failures from missing packages: {summary['static_failures_missing_package']} "
                  f"{summary['static_missing_packages']}")
            problems = Counter(p.split(":")[0] for v in verdicts for p in v.static_problems)
            print(f"  static problems: {dict(problems.most_common())}")
        if args.tier == "run":
            print(f"  run failures: {summary['run_failures']}, of which missing packages: "
                  f"{summary['run_failures_missing_package']} {summary['run_missing_packages']}")
            print(f"  run failure kinds: {summary['run_failure_kinds']}")
            errors = Counter((v.run_error or "")[:90] for v in verdicts
                             if v.run is False and v.run_status == "exception")
            print("  most common run errors:")
            for error, count in errors.most_common(15):
                print(f"    {count:4d}  {error}")
        runs.append({"workers": workers, "seconds": round(seconds, 2), "snippets_per_s": len(codes) / seconds,
                     "median_run_s": median, "summary": summary,
                     "verdicts": [{"question_id": e.question_id, **v.to_dict()} for e, v in zip(examples, verdicts)]})
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"hub": args.hub, "mode": args.mode, "tier": args.tier, "n": len(codes), "runs": runs},
                      handle, indent=1)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
