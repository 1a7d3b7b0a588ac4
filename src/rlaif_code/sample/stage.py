"""Sample stage: a model's answers to prompts, several per prompt, as samples.jsonl.

Design choices:
- Batched `model.generate` with left padding (so every prompt ends where generation
  starts) and the KV cache. Generation ends at the end of a Gorilla answer: eos (or
  another end-of-text token) or the stop strings of `rlaif_code.core.models` ("###Instruction",
  "\\n###") through transformers' `StopStringCriteria` (built once per tokenizer by
  `models.stop_string_criteria`), which stops each row of a batch on its own. The saved
  `text` is the completion only, cut before the stop string; `finished` says whether a
  stop was reached before `max_new_tokens`.
- Work items are (example, sample_id) pairs. Rows are appended and fsynced one batch at a
  time (`JsonlAppender`), so a killed run resumes by skipping the pairs already written.
  Resuming is refused when the settings that decide the answers changed: mixing two
  models' answers in one file would silently corrupt the feedback stage.
- `temperature == 0` means greedy decoding; sampling is seeded per batch so a rerun of the
  same pending work gives the same answers.
- `generate.generate_batch` is the reusable piece (PPO and evaluation can call it on a loaded model).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from rlaif_code.core.artifacts import (
    STAGE_FILE,
    InputError,
    JsonlAppender,
    claim_run,
    finished_result,
    iter_jsonl,
    write_stage_record,
)
from rlaif_code.core.config import check, check_at_least
from rlaif_code.data.parse import parse_output
from rlaif_code.sample.generate import generate_batch

SAMPLES = "samples.jsonl"


@dataclass
class SampleConfig:
    model: str = "runs/default/sft"  # model directory, embedded name, .gguf or Hugging Face id
    data_dir: str = "runs/default/data"  # the data stage's output, whose prompts are answered
    split: Literal["train", "eval"] = "train"  # which of data_dir's files: train.jsonl or eval.jsonl
    input_file: str | None = None  # any JSONL whose rows have a "prompt", instead of data_dir
    out_dir: str = "runs/default/sample"  # where samples.jsonl goes (an interrupted run resumes it)
    num_samples: int = 4  # answers per prompt
    temperature: float = 0.8  # 0 = greedy
    top_p: float = 0.95  # nucleus sampling: draw from the smallest set of tokens with this much probability
    max_new_tokens: int = 256  # longest answer, in tokens
    max_prompt_tokens: int = 1024  # longer prompts lose their start (the end holds "###Output:")
    batch_size: int = 8  # sequences generated together
    max_examples: int | None = None  # first N prompts, for budgets
    seed: int = 0  # seeds the sampling (per batch, so a resumed run writes the same answers)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bfloat16 on a GPU that supports it, else float32
    device: str | None = None  # None: cuda if available, else cpu

    # Settings that do not change which answers are written: a resumed run may differ in these.
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"max_examples", "batch_size", "device", "out_dir"})

    def __post_init__(self) -> None:
        check_at_least(self, 1, "num_samples", "batch_size", "max_new_tokens", "max_prompt_tokens", "max_examples")
        check(self.temperature >= 0, "temperature", f"must be at least 0 (0 = greedy), got {self.temperature!r}")
        check(0.0 < self.top_p <= 1.0, "top_p", f"must be in (0, 1], got {self.top_p!r}")


def load_prompts(cfg: SampleConfig) -> tuple[Path, list[dict[str, Any]]]:
    """(source file, rows with example_id, question_id, prompt)."""
    path = Path(cfg.input_file) if cfg.input_file else Path(cfg.data_dir) / f"{cfg.split}.jsonl"
    rows, seen = [], set()
    for lineno, row in iter_jsonl(path):
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise InputError(f"{path}:{lineno}: missing or empty string field 'prompt'")
        example_id = str(row.get("example_id") or f"{path.stem}:{lineno}")
        if example_id in seen:
            raise InputError(f"{path}:{lineno}: duplicate example_id '{example_id}'")
        seen.add(example_id)
        rows.append({"example_id": example_id, "question_id": row.get("question_id", lineno),
                     "prompt": row["prompt"]})
        if cfg.max_examples is not None and len(rows) >= cfg.max_examples:
            break
    if not rows:
        raise InputError(f"{path}: no prompts to sample from")
    return path, rows


def _batch_seed(seed: int, first: tuple[str, int]) -> int:
    return zlib.crc32(f"{seed}:{first[0]}:{first[1]}".encode())


def run(cfg: SampleConfig) -> dict[str, Any]:
    import torch
    from transformers import set_seed

    from rlaif_code.core.models import load_causal_lm
    from rlaif_code.core.progress import progress_bar

    out = Path(cfg.out_dir)
    if (done := finished_result(out, "sample", cfg)) is not None:
        return done
    source, prompts = load_prompts(cfg)
    claim_run(out, cfg, resuming=(out / SAMPLES).exists())
    (out / STAGE_FILE).unlink(missing_ok=True)  # an earlier run's record must not vouch for a file we extend

    wall_start = time.perf_counter()
    with JsonlAppender(out / SAMPLES) as appender:
        done = {(row.get("example_id"), row.get("sample_id")) for row in appender.existing()}
        todo = [(row, sample_id) for row in prompts for sample_id in range(cfg.num_samples)
                if (row["example_id"], sample_id) not in done]
        n_existing = len(prompts) * cfg.num_samples - len(todo)
        gen_tokens, gen_time, n_finished = 0, 0.0, 0
        if todo:
            model, tokenizer = load_causal_lm(cfg.model, dtype=cfg.dtype, device=cfg.device, padding_side="left")
            model.eval()
            with progress_bar(f"sample {out.name}", len(todo)) as bar:
                for start in range(0, len(todo), cfg.batch_size):
                    batch = todo[start:start + cfg.batch_size]
                    set_seed(_batch_seed(cfg.seed, (batch[0][0]["example_id"], batch[0][1])))
                    tick = time.perf_counter()
                    generations = generate_batch(model, tokenizer, [row["prompt"] for row, _ in batch],
                                                 max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                                 top_p=cfg.top_p, max_prompt_tokens=cfg.max_prompt_tokens)
                    gen_time += time.perf_counter() - tick
                    for (row, sample_id), generation in zip(batch, generations):
                        gen_tokens += generation.n_tokens
                        n_finished += generation.finished
                        appender.write({
                            "example_id": row["example_id"],
                            "question_id": row["question_id"],
                            "sample_id": sample_id,
                            "prompt": row["prompt"],
                            "text": generation.text,
                            "parsed": parse_output(generation.text).fields,
                            "n_tokens": generation.n_tokens,
                            "finished": generation.finished,
                        })
                    bar.advance(len(batch))
            del model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    metrics = {
        "source": str(source),
        "n_prompts": len(prompts),
        "n_samples": len(prompts) * cfg.num_samples,
        "n_generated": len(todo),
        "n_resumed": n_existing,
        "finished_fraction": n_finished / len(todo) if todo else None,
        "generated_tokens": gen_tokens,
        "tokens_per_s": gen_tokens / gen_time if gen_time > 0 else None,
        "wall_time_s": time.perf_counter() - wall_start,
    }
    write_stage_record(out, "sample", cfg, metrics=metrics, outputs=[SAMPLES])
    return metrics
