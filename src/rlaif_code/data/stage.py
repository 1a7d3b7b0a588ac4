"""The data stage: pick the examples, split them, and write prompts and targets.

Output (in `out_dir`): `train.jsonl` and `eval.jsonl`, one example per line with
its `prompt` and `target`, plus `stage.json` carrying this config. With `dev_fraction`
> 0, a seeded slice of the *training* examples goes to `dev.jsonl` instead of
`train.jsonl` (never an eval item): the prompts PPO selects its checkpoint on, which
no stage trains on.

`hub: custom` is a user's own API database (`api_db`) with their own example files
(`eval_file`, and `train_file` or `extra_train_files`, e.g. the synth stage's examples);
`api_db` with another hub replaces that hub's database. Example rows without Gorilla's
`api_data` get their API's document from the database, found by their api_call.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlaif_code.core.artifacts import InputError, atomic_write_jsonl, finished_result, read_jsonl, write_stage_record
from rlaif_code.core.config import check, check_at_least
from rlaif_code.core.fields import added_field
from rlaif_code.data.apibench import (
    CUSTOM_HUB,
    TRAIN_FILES,
    Example,
    load_api_database,
    load_eval_examples,
    load_examples,
    split_pool,
)
from rlaif_code.data.prompts import PromptBuilder, build_target
from rlaif_code.data.source import DataSource


@dataclass
class DataConfig:
    # APIBench hub: hf (HuggingFace), tf (TensorFlow Hub), th (TorchHub), or custom (your api_db and example files)
    hub: Literal["hf", "tf", "th", "custom"] = "th"
    data: str | None = None  # Gorilla data dir; None: $RLAIF_DATA, else download into the cache
    # your API database (JSONL of Gorilla's API fields, see data/api_db.py); None: the hub's own
    api_db: str | None = added_field(None)
    # pool: the paper's seeded 90/10 split of all available examples of the hub;
    # given: the hub's own train/eval files; auto: given where a train file exists locally.
    split: Literal["auto", "pool", "given"] = "auto"
    train_file: str | None = None  # an examples file to train on instead of the hub's (with eval_file)
    # an examples file to evaluate on instead of the hub's (with train_file, or alone: training on extra_train_files)
    eval_file: str | None = None
    # more training examples (e.g. the synth stage's synth.jsonl), added after the split, never to eval
    extra_train_files: list[str] = added_field(default_factory=list)
    eval_fraction: float = 0.1  # share of the pool held out for evaluation (split: pool)
    seed: int = 0  # seeds the pool split and the max_train / max_eval subsets
    max_train: int | None = None  # a seeded subset of N training examples, for budgets; None: all
    max_eval: int | None = None  # a seeded subset of N eval examples, for budgets; None: all
    # share of the training examples set aside as dev prompts (PPO's model selection); 0: none
    dev_fraction: float = 0.1
    # API documentation in the prompt: none, the reference API's (oracle, an upper bound) or
    # BM25's best matches in the hub's API database.
    retrieval: Literal["none", "oracle", "bm25"] = "none"
    retrieval_top_k: int = 1  # documents bm25 retrieval puts in each prompt
    out_dir: str = "runs/default/data"  # where train.jsonl and eval.jsonl are written

    def __post_init__(self) -> None:
        check(0.0 < self.eval_fraction < 1.0, "eval_fraction", f"must be in (0, 1), got {self.eval_fraction!r}")
        check(0.0 <= self.dev_fraction < 1.0, "dev_fraction", f"must be in [0, 1), got {self.dev_fraction!r}")
        check_at_least(self, 1, "max_train", "max_eval", "retrieval_top_k")
        # eval_file alone is allowed: training then comes from extra_train_files alone (in `rlaif run`, the synth
        # stage's, added after this check), which the stage checks when it runs
        check(not self.train_file or bool(self.eval_file), "eval_file", "must be given together with train_file")
        if self.hub == CUSTOM_HUB:
            check(bool(self.api_db), "api_db", "must be set for hub custom (your API database file)")
            check(bool(self.eval_file), "eval_file", "must be set for hub custom (your eval examples)")


def _subset(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    if limit is None or limit >= len(examples):
        return examples
    picked = random.Random(seed).sample(range(len(examples)), limit)
    return [examples[i] for i in sorted(picked)]


def select_examples(cfg: DataConfig) -> tuple[list[Example], list[Example]]:
    source = DataSource.resolve(cfg.data)
    # Only a user's database is read up front: Gorilla's example files carry api_data themselves.
    database = load_api_database(source, cfg.hub, cfg.api_db) if cfg.api_db else None
    if cfg.train_file or cfg.eval_file:
        if not cfg.eval_file or not (cfg.train_file or cfg.extra_train_files):
            raise InputError("eval_file without train_file: the training examples come from extra_train_files, "
                             "and none is given (in `rlaif run`: enable synth, or set data.train_file)")
        evals = load_examples(cfg.eval_file, cfg.hub, database)
        train = load_examples(cfg.train_file, cfg.hub, database) if cfg.train_file else []
    else:
        mode = cfg.split
        if mode == "auto":
            mode = "given" if source.has(TRAIN_FILES[cfg.hub]) else "pool"
        if mode == "given":
            train = load_examples(source.path(TRAIN_FILES[cfg.hub]), cfg.hub)
            evals = load_eval_examples(source, cfg.hub)
        else:
            pool = load_eval_examples(source, cfg.hub)
            if source.has(TRAIN_FILES[cfg.hub]) or source.downloads:
                pool = load_examples(source.path(TRAIN_FILES[cfg.hub]), cfg.hub) + pool
            train, evals = split_pool(pool, cfg.eval_fraction, cfg.seed)
    for extra in cfg.extra_train_files:
        train = train + load_examples(extra, cfg.hub, database)
    train, evals = _subset(train, cfg.max_train, cfg.seed), _subset(evals, cfg.max_eval, cfg.seed + 1)
    if not train or not evals:
        raise InputError(f"empty split: {len(train)} train / {len(evals)} eval examples")
    return train, evals


def split_dev(train: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, dev): a seeded `fraction` of the training examples, at least one, set aside."""
    if fraction == 0:
        return train, []
    n_dev = round(len(train) * fraction)
    if n_dev < 1 or n_dev >= len(train):
        raise InputError(f"data.dev_fraction={fraction} sets aside {n_dev} of {len(train)} training examples: "
                         "it must leave at least one dev and one training example (raise it, or 0 for no dev set)")
    dev = set(random.Random(seed + 2).sample(range(len(train)), n_dev))
    return [e for i, e in enumerate(train) if i not in dev], [e for i, e in enumerate(train) if i in dev]


def run(cfg: DataConfig) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    if (done := finished_result(out, "data", cfg)) is not None:
        return done
    train, evals = select_examples(cfg)
    train, dev = split_dev(train, cfg.dev_fraction, cfg.seed)
    source = DataSource.resolve(cfg.data)
    database = load_api_database(source, cfg.hub, cfg.api_db) if cfg.retrieval == "bm25" else None
    builder = PromptBuilder(cfg.retrieval, database, cfg.retrieval_top_k)
    files = [("train.jsonl", train), ("eval.jsonl", evals)] + ([("dev.jsonl", dev)] if dev else [])
    (out / "dev.jsonl").unlink(missing_ok=True)  # an earlier run's dev set is not this one's
    for name, examples in files:
        atomic_write_jsonl(out / name, ({**e.to_dict(), "prompt": builder(e), "target": build_target(e)}
                                        for e in examples))
    metrics = {"n_train": len(train), "n_dev": len(dev), "n_eval": len(evals),
               "incomplete_train": sum(not e.complete for e in train)}
    write_stage_record(out, "data", cfg, metrics=metrics, outputs=[name for name, _ in files])
    return metrics


def load_split(data_dir: str | Path, split: Literal["train", "dev", "eval"]) -> list[dict[str, Any]]:
    """Rows written by the data stage: Example fields plus `prompt` and `target`."""
    rows = read_jsonl(Path(data_dir) / f"{split}.jsonl")
    if not rows:
        raise InputError(f"{Path(data_dir) / f'{split}.jsonl'}: no examples")
    return rows
