"""Sample stage: a model's answers to prompts, several per prompt, as samples.jsonl.

Design choices:
- Generation is `generate.generate_stream`, our own decoding loop (shared with PPO's rollouts):
  a KV cache whose rows leave the batch as they end, and the end of a Gorilla answer, eos (or
  another end-of-text token) or a stop string of `rlaif_code.core.models` ("###Instruction",
  "\\n###"), found exactly where `cut_at_stop` finds it. The saved `text` is the completion
  only, cut before the stop string; `finished` says whether a stop was reached before
  `max_new_tokens`.
- Work items are (example, sample_id) pairs, sorted by prompt length in tokens (then by
  position), so the rows generated together need little padding. Up to `batch_size` answers
  are in flight; as one ends, waiting prompts take its place. Rows are appended and fsynced
  (`JsonlAppender`) in the sorted order, each once every row before it is written, so the file
  is always a prefix of that order: a killed run resumes by skipping the pairs already written
  and writes the same file as an unbroken run. Resuming is refused when the settings that
  decide the answers changed: mixing two models' answers in one file would silently corrupt
  the feedback stage.
- `temperature == 0` means greedy decoding. Sampling draws from a generator of each pair's own,
  seeded by (seed, example_id, sample_id): an answer does not depend on the batch it was in,
  so batch size, order and resuming leave every answer as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal

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
from rlaif_code.core.fields import added_field
from rlaif_code.data.parse import parse_output
from rlaif_code.sample.constrained import ApiConstraint, api_constraint
from rlaif_code.sample.generate import Generation, generate_stream
from rlaif_code.sample.sampling import row_seed

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
    batch_size: int = 128  # answers in flight (fastest on 2 CPU cores: 417 tokens/s, 334 at 64, 234 at 32)
    max_examples: int | None = None  # first N prompts, for budgets
    seed: int = 0  # seeds the sampling (per answer: batch size and resuming change no answer)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bfloat16 on a bf16 GPU or an AMX CPU, else float32
    device: str | None = None  # None: cuda if available, else cpu
    # Decode a string argument of a call to an API database function (a model id, a hub repo) only as a value the
    # database passes that function (sample/constrained.py): an answer can no longer invent an id. Needs hub.
    constrain_api: bool = added_field(False)
    hub: str | None = added_field(None)  # whose API database constrain_api reads (hf, th, tf, custom)
    data: str | None = added_field(None)  # Gorilla data (its API databases); None: $RLAIF_DATA, else the download cache
    api_db: str | None = added_field(None)  # your API database (hub custom) for constrain_api

    # Settings that do not change which answers are written: a resumed run may differ in these.
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"max_examples", "batch_size", "device", "out_dir"})

    def __post_init__(self) -> None:
        check_at_least(self, 1, "num_samples", "batch_size", "max_new_tokens", "max_prompt_tokens", "max_examples")
        check(self.temperature >= 0, "temperature", f"must be at least 0 (0 = greedy), got {self.temperature!r}")
        check(0.0 < self.top_p <= 1.0, "top_p", f"must be in (0, 1], got {self.top_p!r}")


def with_api_database(cfg: SampleConfig, hub: str, data: str | None, api_db: str | None) -> SampleConfig:
    """`cfg` reading the run's API database when it constrains decoding (else as it is: its record unchanged)."""
    return replace(cfg, hub=hub, data=data, api_db=api_db) if cfg.constrain_api else cfg


def api_hook(cfg: SampleConfig, tokenizer: Any) -> ApiConstraint | None:
    if not cfg.constrain_api:
        return None
    from rlaif_code.data.apibench import api_database

    assert cfg.hub is not None
    return api_constraint([row["api_call"] for row in api_database(cfg.data, cfg.hub, cfg.api_db)], tokenizer)


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


def in_length_order(todo: list[tuple[dict[str, Any], int]], tokenizer: Any,
                    max_prompt_tokens: int) -> list[tuple[dict[str, Any], int]]:
    """The pairs by prompt length in tokens (then as given), so a batch's prompts need little padding."""
    prompts = list({row["prompt"]: None for row, _ in todo})
    lengths = dict(zip(prompts, (min(len(ids), max_prompt_tokens) for ids in tokenizer(prompts)["input_ids"])))
    return [pair for _, pair in sorted(enumerate(todo), key=lambda item: (lengths[item[1][0]["prompt"]], item[0]))]


def in_order(answers: Iterator[tuple[int, Generation]], todo: list[Any]) -> Iterator[tuple[Any, Generation]]:
    """(todo item, answer) in the order of `todo`, from answers that arrive as they end: the file
    is always a prefix of that order, so a resumed run writes what an unbroken one would."""
    ready: dict[int, Generation] = {}
    written = 0
    for index, generation in answers:
        ready[index] = generation
        while written in ready:
            yield todo[written], ready.pop(written)
            written += 1


def sample_row(row: dict[str, Any], sample_id: int, generation: Generation) -> dict[str, Any]:
    return {"example_id": row["example_id"], "question_id": row["question_id"], "sample_id": sample_id,
            "prompt": row["prompt"], "text": generation.text, "parsed": parse_output(generation.text).fields,
            "n_tokens": generation.n_tokens, "finished": generation.finished}


def run(cfg: SampleConfig) -> dict[str, Any]:
    import torch

    from rlaif_code.core.models import load_causal_lm
    from rlaif_code.core.progress import progress_bar

    out = Path(cfg.out_dir)
    if (done := finished_result(out, "sample", cfg)) is not None:
        return done
    # Checked here, not in the config: `rlaif run` fills hub in from its data section.
    check(not cfg.constrain_api or cfg.hub is not None, "constrain_api",
          "needs hub (hf, th, tf, or custom with api_db): the API database whose values it allows")
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
        hook = None
        if todo:
            model, tokenizer = load_causal_lm(cfg.model, dtype=cfg.dtype, device=cfg.device, padding_side="left")
            model.eval()
            hook = api_hook(cfg, tokenizer)
            todo = in_length_order(todo, tokenizer, cfg.max_prompt_tokens)
            tick = time.perf_counter()
            with progress_bar(f"sample {out.name}", len(todo)) as bar:
                for (row, sample_id), generation in in_order(generate_stream(
                        model, tokenizer, [row["prompt"] for row, _ in todo], batch_size=cfg.batch_size,
                        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                        max_prompt_tokens=cfg.max_prompt_tokens,
                        seeds=[row_seed(cfg.seed, row["example_id"], sample_id) for row, sample_id in todo],
                        adjust_logits=hook), todo):
                    gen_tokens += generation.n_tokens
                    n_finished += generation.finished
                    appender.write(sample_row(row, sample_id, generation))
                    bar.advance(1)
            gen_time = time.perf_counter() - tick
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
    if hook is not None:  # what the constraint did to the answers generated now
        metrics["api_constraint"] = {"functions": len(hook.table), "literals": hook.literals,
                                     "overruled_steps": hook.overruled}
    write_stage_record(out, "sample", cfg, metrics=metrics, outputs=[SAMPLES])
    return metrics
