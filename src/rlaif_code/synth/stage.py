"""The synth stage: training examples written from an API database, for data without APIBench's.

Input: an API database (a hub's own, or `api_db`: a user's JSONL of Gorilla's API fields) and
the eval instructions (`eval_file`, else the hub's eval file), which are only compared against,
never used as a source. Output (in `out_dir`): `synth.jsonl`, rows of an APIBench example file
(`code` holding `###Instruction: ...\n###Output: <<<domain>>>: ...`, `api_call`, `provider`,
`api_data`) plus `generator`, `source_api`, `source_line` and `eval_overlap`, so that
`data.train_file` or `data.extra_train_files` reads it; and `stage.json` with the config and the
counts: examples per generator, what was removed and why, the largest overlap with an eval
instruction that was kept, and the seconds it took.

The filter: an instruction whose word n-gram overlap (`overlap_n`, see synth/overlap.py) with
some eval instruction reaches `max_overlap` is removed, as are exact repeats and examples that
would not read back as written.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlaif_code.core.artifacts import atomic_write_jsonl, finished_result, write_stage_record
from rlaif_code.core.config import check, check_at_least
from rlaif_code.data.apibench import CUSTOM_HUB, api_database, load_eval_examples, load_examples
from rlaif_code.data.source import DataSource
from rlaif_code.synth.examples import SourceApi, SynthExample, example_row, gorilla_text
from rlaif_code.synth.generators import GENERATORS
from rlaif_code.synth.llm import SynthLLMConfig
from rlaif_code.synth.overlap import OverlapIndex


@dataclass
class SynthConfig:
    enabled: bool = False  # in `rlaif run`: synthesize training examples before the data stage (data trains on them)
    # the hub whose API database is the source: hf, tf, th, or custom (api_db)
    hub: Literal["hf", "tf", "th", "custom"] = "th"
    data: str | None = None  # Gorilla data dir; None: $RLAIF_DATA, else the download cache
    api_db: str | None = None  # your API database (JSONL of Gorilla's API fields); None: the hub's own
    # examples whose instructions synthesized ones must not come close to; None: the hub's eval file (none for custom)
    eval_file: str | None = None
    generators: list[str] = field(default_factory=lambda: ["template"])  # which generators write: template, llm
    per_api: int = 3  # examples each generator writes per API
    max_apis: int | None = None  # a seeded subset of N APIs of the database, for budgets; None: all
    overlap_n: int = 4  # word n-gram size of the eval-overlap filter
    max_overlap: float = 0.5  # remove an instruction sharing this share of its n-grams with one eval instruction
    llm: SynthLLMConfig = field(default_factory=SynthLLMConfig)  # the llm generator's server
    cache_path: str | None = None  # SQLite cache of the llm generator's replies; None: <out_dir>/synth_cache.sqlite
    seed: int = 0  # seeds the API subset and the template's choice of phrasings
    out_dir: str = "runs/default/synth"  # where synth.jsonl and stage.json are written

    def __post_init__(self) -> None:
        check_at_least(self, 1, "per_api", "max_apis", "overlap_n")
        check(0.0 < self.max_overlap <= 1.0, "max_overlap", f"must be in (0, 1], got {self.max_overlap!r}")
        check(bool(self.generators), "generators", "must name at least one generator")
        unknown = [name for name in self.generators if name not in GENERATORS]
        check(not unknown, "generators", f"unknown generator {unknown[:1]} (known: {', '.join(GENERATORS)})")
        check(len(set(self.generators)) == len(self.generators), "generators", "names a generator twice")
        if self.hub == CUSTOM_HUB:
            check(bool(self.api_db), "api_db", "must be set for hub custom (your API database file)")


def record_config(cfg: SynthConfig) -> SynthConfig:
    """The config as stored in stage.json: an API key given in the config is not written out."""
    if cfg.llm.api_key:
        return dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, api_key="***"))
    return cfg


def source_apis(cfg: SynthConfig) -> list[SourceApi]:
    database = api_database(cfg.data, cfg.hub, cfg.api_db)
    apis = [SourceApi(line, entry) for line, entry in enumerate(database, start=1)]
    if cfg.max_apis is not None and cfg.max_apis < len(apis):
        picked = random.Random(cfg.seed).sample(range(len(apis)), cfg.max_apis)
        apis = [apis[i] for i in sorted(picked)]
    return apis


def eval_instructions(cfg: SynthConfig) -> list[str]:
    if cfg.eval_file:
        return [e.instruction for e in load_examples(cfg.eval_file, cfg.hub, _database_or_none(cfg))]
    if cfg.hub == CUSTOM_HUB:
        return []
    return [e.instruction for e in load_eval_examples(DataSource.resolve(cfg.data), cfg.hub)]


def _database_or_none(cfg: SynthConfig) -> list[dict[str, Any]] | None:
    return api_database(cfg.data, cfg.hub, cfg.api_db) if cfg.api_db else None


def filter_examples(examples: list[SynthExample], index: OverlapIndex,
                    max_overlap: float) -> tuple[list[dict[str, Any]], Counter[str], float]:
    """(rows kept, counts of what was removed by reason, the largest overlap kept)."""
    rows, removed, seen, highest = [], Counter[str](), set(), 0.0
    for example in examples:
        text = gorilla_text(example)
        if text is None:
            removed["malformed"] += 1
            continue
        if text in seen:
            removed["duplicate"] += 1
            continue
        overlap = index.overlap(example.instruction)
        if overlap >= max_overlap:
            removed["overlap"] += 1
            continue
        seen.add(text)
        highest = max(highest, overlap)
        rows.append(example_row(example, text, overlap))
    return rows, removed, highest


def run(cfg: SynthConfig) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    recorded = record_config(cfg)
    if (done := finished_result(out, "synth", recorded)) is not None:
        return done
    started = time.perf_counter()
    apis = source_apis(cfg)
    references = eval_instructions(cfg)
    index = OverlapIndex(references, cfg.overlap_n)
    generated: list[SynthExample] = []
    generator_stats: dict[str, Any] = {}
    for name in cfg.generators:
        result = GENERATORS.get(name)(apis, cfg)
        generated += result.examples
        if result.stats:
            generator_stats[name] = result.stats
    rows, removed, highest = filter_examples(generated, index, cfg.max_overlap)
    atomic_write_jsonl(out / "synth.jsonl", rows)
    kept = Counter(row["generator"] for row in rows)
    metrics = {
        "n_examples": len(rows),
        "n_apis": len(apis),
        "n_apis_covered": len({row["source_line"] for row in rows}),
        "generated": len(generated),
        "per_generator": {name: kept[name] for name in cfg.generators},
        "removed_by_overlap": removed["overlap"],
        "removed_duplicates": removed["duplicate"],
        "removed_malformed": removed["malformed"],
        "max_overlap_after_filter": round(highest, 4),
        "n_eval_instructions": len(references),
        "generator_stats": generator_stats,
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_stage_record(out, "synth", recorded, metrics=metrics, outputs=["synth.jsonl"])
    return metrics
