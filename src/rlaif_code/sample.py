"""Sample stage: a model's answers to prompts, several per prompt, as samples.jsonl.

Design choices:
- Batched `model.generate` with left padding (so every prompt ends where generation
  starts) and the KV cache. Generation ends at the end of a Gorilla answer: eos (or
  another end-of-text token) or the stop strings of `rlaif_code.models` ("###Instruction",
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
- `generate_batch` is the reusable piece (PPO and evaluation can call it on a loaded model).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlaif_code.artifacts import (
    STAGE_FILE,
    InputError,
    JsonlAppender,
    atomic_write_json,
    iter_jsonl,
    read_json,
    read_stage_record,
    stage_is_done,
    write_stage_record,
)
from rlaif_code.config import to_dict
from rlaif_code.data.parse import parse_output

SAMPLES = "samples.jsonl"
RUN_IDENTITY = "sample_run.json"


@dataclass
class SampleConfig:
    model: str = "runs/default/sft"  # model directory, embedded name, .gguf or Hugging Face id
    data_dir: str = "runs/default/data"  # the data stage's output ...
    split: Literal["train", "eval"] = "train"  # ... and which of its files
    input_file: str | None = None  # or any JSONL whose rows have a "prompt"
    out_dir: str = "runs/default/sample"
    num_samples: int = 4  # answers per prompt
    temperature: float = 0.8  # 0 = greedy
    top_p: float = 0.95
    max_new_tokens: int = 256
    max_prompt_tokens: int = 1024  # longer prompts lose their start (the end holds "###Output:")
    batch_size: int = 8  # sequences generated together
    max_examples: int | None = None  # first N prompts, for budgets
    seed: int = 0
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    device: str | None = None  # None: cuda if available, else cpu


# Settings that do not change which answers are written: a resumed run may differ in these.
_BUDGET_FIELDS = {"max_examples", "batch_size", "device", "out_dir"}


@dataclass
class Generation:
    text: str  # completion only, cut before any stop string
    n_tokens: int  # tokens the model generated (up to and including a stop token)
    finished: bool  # reached eos or a stop string before max_new_tokens


def generate_batch(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int,
                   temperature: float = 0.0, top_p: float = 1.0, max_prompt_tokens: int | None = None,
                   **generate_kwargs: Any) -> list[Generation]:
    """Generate one answer per prompt, stopping at the end of a Gorilla answer."""
    import torch

    from rlaif_code.models import cut_at_stop, generation_stop_kwargs, stop_token_ids

    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, truncation=max_prompt_tokens is not None,
                    max_length=max_prompt_tokens, add_special_tokens=True)
    enc = {k: v.to(model.device) for k, v in enc.items()}
    sampling = temperature > 0
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": sampling, "use_cache": True,
                              **generation_stop_kwargs(tokenizer)}
    if sampling:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:  # unset the sampling knobs a saved generation_config may carry, so greedy stays greedy
        kwargs.update(temperature=None, top_p=None, top_k=None)
    kwargs.update(generate_kwargs)
    with torch.inference_mode():
        output = model.generate(**enc, **kwargs)
    new_tokens = output[:, enc["input_ids"].shape[1]:].tolist()
    stops = set(stop_token_ids(tokenizer))
    results = []
    for ids in new_tokens:
        n_tokens, hit_stop_token = len(ids), False
        for position, token in enumerate(ids):
            if token in stops:
                n_tokens, hit_stop_token = position + 1, True
                break
        else:  # rows that ended by a stop string are padded after it
            while n_tokens and ids[n_tokens - 1] == tokenizer.pad_token_id:
                n_tokens -= 1
        text = tokenizer.decode(ids[:n_tokens], skip_special_tokens=True)
        text, hit_stop_string = cut_at_stop(text)
        results.append(Generation(text=text, n_tokens=n_tokens, finished=hit_stop_token or hit_stop_string))
    return results


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


def _identity(cfg: SampleConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(cfg).items() if k not in _BUDGET_FIELDS}


def _check_resumable(out: Path, cfg: SampleConfig) -> None:
    identity_file = out / RUN_IDENTITY
    current = _identity(cfg)
    if (out / SAMPLES).exists() and identity_file.is_file():
        stored = read_json(identity_file)
        if stored != current:
            changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
            raise InputError(f"{out / SAMPLES} holds samples made with other settings ({', '.join(changed)}); "
                             "use another out_dir or delete the file to start over")
    atomic_write_json(identity_file, current)


def _batch_seed(seed: int, first: tuple[str, int]) -> int:
    return zlib.crc32(f"{seed}:{first[0]}:{first[1]}".encode())


def run(cfg: SampleConfig) -> dict[str, Any]:
    import torch
    from transformers import set_seed

    from rlaif_code.models import load_causal_lm
    from rlaif_code.progress import progress_bar

    out = Path(cfg.out_dir)
    if stage_is_done(out, "sample", cfg):
        return {**(read_stage_record(out) or {}).get("metrics", {}), "skipped": True}
    if cfg.num_samples < 1 or cfg.batch_size < 1 or cfg.max_new_tokens < 1:
        raise InputError("num_samples, batch_size and max_new_tokens must be at least 1")
    source, prompts = load_prompts(cfg)
    _check_resumable(out, cfg)
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
