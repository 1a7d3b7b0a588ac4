"""The data stage: pick the examples, split them, and write prompts and targets.

Output (in `out_dir`): `train.jsonl` and `eval.jsonl`, one example per line with
its `prompt` and `target`, plus `stage.json` carrying this config. With `dev_fraction`
> 0, a seeded slice of the *training* examples goes to `dev.jsonl` instead of
`train.jsonl` (never an eval item): the prompts PPO selects its checkpoint on, which
no stage trains on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlaif_code.core.artifacts import InputError, atomic_write_jsonl, finished_result, read_jsonl, write_stage_record
from rlaif_code.core.config import check, check_at_least
from rlaif_code.data.apibench import (
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
    hub: Literal["hf", "tf", "th"] = "th"  # APIBench hub: hf (HuggingFace), tf (TensorFlow Hub), th (TorchHub)
    data: str | None = None  # Gorilla data dir; None: $RLAIF_DATA, else download into the cache
    # pool: the paper's seeded 90/10 split of all available examples of the hub;
    # given: the hub's own train/eval files; auto: given where a train file exists locally.
    split: Literal["auto", "pool", "given"] = "auto"
    train_file: str | None = None  # an examples file to train on instead of the hub's (with eval_file)
    eval_file: str | None = None  # an examples file to evaluate on instead of the hub's (with train_file)
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
        missing, given = ("eval_file", "train_file") if self.train_file else ("train_file", "eval_file")
        check(bool(self.train_file) == bool(self.eval_file), missing, f"must be given together with {given}")


def _subset(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    if limit is None or limit >= len(examples):
        return examples
    picked = random.Random(seed).sample(range(len(examples)), limit)
    return [examples[i] for i in sorted(picked)]


def select_examples(cfg: DataConfig) -> tuple[list[Example], list[Example]]:
    source = DataSource.resolve(cfg.data)
    if cfg.train_file or cfg.eval_file:
        if not (cfg.train_file and cfg.eval_file):
            raise InputError("train_file and eval_file must be given together")
        train, evals = load_examples(cfg.train_file, cfg.hub), load_examples(cfg.eval_file, cfg.hub)
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
    api_db = load_api_database(source, cfg.hub) if cfg.retrieval == "bm25" else None
    builder = PromptBuilder(cfg.retrieval, api_db, cfg.retrieval_top_k)
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
