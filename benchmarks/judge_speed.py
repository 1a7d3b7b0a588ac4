"""Judge throughput against a local llama.cpp server (SmolLM2-135M), and a judge-check run.

    python benchmarks/judge_speed.py [--n 24] [--judge-check 100] [--seed 0]

Speed: the `openai` judge (logprobs path, one question per request) asks the default
rubric's `llm` questions about TorchHub reference answers, first at concurrency 1,
then at concurrency 8 (different answers, so nothing is cached), then everything again
through the cache with a fresh judge. Prints requests/s and the time of the cached
rerun (which must send no request).

--judge-check N: Gorilla's released zero-shot HuggingFace answers
(responses/response_huggingface_Gorilla_FT_0_shot.jsonl) become a samples file,
the HuggingFace eval set becomes the data stage's output, and `judge-check` asks the
local SmolLM2 judge the tool-verifiable questions on N of those answers (seeded),
printing per-question accuracy and Cohen's kappa against the tools.

Needs llama-cpp-python[server] and the Gorilla data ($RLAIF_DATA or ../shared/gorilla).
Everything it writes goes to a temporary directory (or --work-dir, where a rerun of
an interrupted judge-check resumes from the cache); the server is stopped at exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from rlaif_code.feedback.cache import JudgeCache
from rlaif_code.feedback.judges import JudgeSubject, ask_all
from rlaif_code.feedback.judges.openai_judge import OpenAIJudge, OpenAIJudgeConfig
from rlaif_code.feedback.local_server import LlamaCppServer, smollm2_gguf
from rlaif_code.feedback.rubric import load_rubric

REPO = Path(__file__).resolve().parents[1]


def gorilla_dir() -> Path:
    return Path(os.environ.get("RLAIF_DATA") or REPO.parent / "shared" / "gorilla")


def torchhub_subjects(n: int) -> list[JudgeSubject]:
    from rlaif_code.data.apibench import load_eval_examples
    from rlaif_code.data.parse import format_answer
    from rlaif_code.data.source import DataSource

    examples = load_eval_examples(DataSource(gorilla_dir(), downloads=False), "th")[:n]
    return [JudgeSubject(e.instruction, format_answer(e.fields()), e.reference_api) for e in examples]


def timed_run(server: LlamaCppServer, cache: JudgeCache | None, subjects: list[JudgeSubject], concurrency: int) -> dict:
    questions = load_rubric().llm_questions
    judge = OpenAIJudge(OpenAIJudgeConfig(base_url=server.base_url, model=server.model, concurrency=concurrency,
                                          max_tokens=1, timeout_s=120.0))
    requests = [req for s in subjects for req in judge.requests_for(s, questions)]
    start = time.perf_counter()
    replies = ask_all(judge, cache, requests)
    elapsed = time.perf_counter() - start
    return {"requests_needed": len(requests), "sent": judge.stats.http_requests, "seconds": elapsed,
            "requests_per_s": (judge.stats.http_requests / elapsed) if judge.stats.http_requests else None,
            "prompt_tokens": judge.stats.prompt_tokens, "paths": dict(judge.stats.paths),
            "yes": sum(a["answer"] == "yes" for r in replies.values() for a in r["answers"].values())}


def speed(server: LlamaCppServer, work: Path, n: int) -> None:
    subjects = torchhub_subjects(2 * n)
    cache = JudgeCache(work / "speed_cache.sqlite")
    # One untimed request first, so model loading and first-call set-up are not counted.
    timed_run(server, None, subjects[:1], 1)
    results = {}
    for concurrency, part in ((1, subjects[:n]), (8, subjects[n:])):
        results[concurrency] = timed_run(server, cache, part, concurrency)
        r = results[concurrency]
        print(f"concurrency {concurrency}: {r['sent']} requests in {r['seconds']:.2f} s = "
              f"{r['requests_per_s']:.2f} req/s ({r['prompt_tokens'] / max(r['sent'], 1):.0f} prompt tokens/request, "
              f"read via {r['paths']})")
    rerun = timed_run(server, cache, subjects, 8)
    print(f"cached rerun: {rerun['requests_needed']} answers in {rerun['seconds'] * 1000:.1f} ms, "
          f"{rerun['sent']} requests sent")
    cache.close()


def judge_check(server: LlamaCppServer, work: Path, n: int, seed: int, questions: list[str]) -> None:
    from rlaif_code.data import DataConfig
    from rlaif_code.data import run as run_data
    from rlaif_code.data.parse import parse_output
    from rlaif_code.feedback.judge_check import JudgeCheckConfig
    from rlaif_code.feedback.judge_check import run as run_check

    data_dir = work / "data_hf"
    run_data(DataConfig(hub="hf", data=str(gorilla_dir()), out_dir=str(data_dir)))
    prompts = {}
    for name in ("train.jsonl", "eval.jsonl"):
        for line in (data_dir / name).read_text().splitlines():
            row = json.loads(line)
            prompts[row["example_id"]] = row["prompt"]
    responses = gorilla_dir() / "responses" / "response_huggingface_Gorilla_FT_0_shot.jsonl"
    samples = work / "gorilla_samples.jsonl"
    with samples.open("w") as out:
        for line in responses.read_text().splitlines():
            row = json.loads(line)
            example_id = f"huggingface_eval:{row['question_id']}"  # question_id = line in huggingface_eval.json
            text = row.get("text") or ""
            # The release stored each answer JSON-encoded once too often: besides the
            # escaped newlines (undone by parse_output) nearly every text ends in a stray
            # closing quote, which would make every code field a syntax error.
            if text.endswith('"') and text.count('"') % 2 == 1:
                text = text[:-1]
            out.write(json.dumps({"example_id": example_id, "question_id": row["question_id"], "sample_id": 0,
                                  "prompt": prompts[example_id], "text": text,
                                  "parsed": parse_output(text).fields}) + "\n")
    # Concurrency 1 keeps an answer's questions back to back, so llama.cpp reuses the
    # cached prompt prefix (everything but the question) instead of reading it again.
    cfg = JudgeCheckConfig(samples=str(samples), data_dir=str(data_dir), data=str(gorilla_dir()), n=n, seed=seed,
                           questions=questions,
                           openai=OpenAIJudgeConfig(base_url=server.base_url, model=server.model, concurrency=1,
                                                    max_tokens=1, timeout_s=120.0),
                           out_dir=str(work / "judge_check"))
    start = time.perf_counter()
    metrics = run_check(cfg)
    elapsed = time.perf_counter() - start
    print(f"\njudge-check: {metrics['judge']} vs tools on {metrics['n_answers']} of Gorilla's released "
          f"zero-shot HuggingFace answers (seed {seed}), {elapsed:.0f} s, "
          f"{metrics['judge_stats']['requests']} requests, read via {metrics['judge_stats']['reply_paths']}")
    print(f"{'question':<20} {'tool':<22} {'n':>4} {'acc':>6} {'kappa':>6} {'tool yes':>8} {'judge yes':>9} "
          f"{'unparsed':>8}")
    rows = list(metrics["per_question"].items()) + [("pooled", {**metrics["pooled"], "tool": "-"})]
    for qid, m in rows:
        acc = f"{m['accuracy']:.3f}" if m["accuracy"] is not None else "-"
        kappa = f"{m['kappa']:.3f}" if m["kappa"] is not None else "-"
        print(f"{qid:<20} {m['tool']:<22} {m['n_compared']:>4} {acc:>6} {kappa:>6} {m['tool_yes']:>8} "
              f"{m['judge_yes']:>9} {m['judge_unparseable']:>8}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=24, help="answers per concurrency level (x4 questions)")
    parser.add_argument("--judge-check", type=int, default=0, metavar="N", help="also run judge-check on N answers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--questions", default="", help="judge-check question ids, comma-separated (default: all)")
    parser.add_argument("--work-dir", default=None, help="keep outputs and the judge cache here (a rerun resumes)")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args(argv)
    questions = [q for q in args.questions.split(",") if q]
    with tempfile.TemporaryDirectory() as tmp, LlamaCppServer(smollm2_gguf(), n_ctx=2048) as server:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"llama.cpp server on {server.base_url} serving {server.model_path.name} "
              f"({server.n_threads} threads), machine: {os.cpu_count()} cores")
        if not args.skip_speed:
            speed(server, Path(tmp), args.n)
        if args.judge_check:
            judge_check(server, work, args.judge_check, args.seed, questions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
