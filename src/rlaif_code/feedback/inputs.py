"""The feedback stage's inputs: sampled answers joined with the data stage's rows (the references)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import InputError, iter_jsonl

SAMPLE_FIELDS = ("example_id", "sample_id", "text")


@dataclass
class Sample:
    row: dict[str, Any]
    lineno: int
    fields: dict[str, str]
    reference: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return str(self.row["example_id"]), str(self.row["sample_id"])


def load_references(data_dir: str | Path) -> dict[str, dict[str, Any]]:
    """example_id -> the data stage's row, from train.jsonl and eval.jsonl (whichever exist)."""
    data_dir = Path(data_dir)
    files = [data_dir / name for name in ("train.jsonl", "eval.jsonl") if (data_dir / name).is_file()]
    if not files:
        raise InputError(f"no train.jsonl or eval.jsonl in {data_dir} (data_dir: the data stage's out_dir)")
    refs: dict[str, dict[str, Any]] = {}
    for path in files:
        for lineno, row in iter_jsonl(path):
            if "example_id" not in row:
                raise InputError(f"{path}:{lineno}: missing field 'example_id'")
            refs[str(row["example_id"])] = row
    return refs


def load_samples(path: str | Path, references: dict[str, dict[str, Any]], data_dir: str | Path,
                 limit: int | None = None) -> list[Sample]:
    from rlaif_code.data.parse import FIELDS, parse_output

    path = Path(path)
    samples: list[Sample] = []
    seen: dict[tuple[str, str], int] = {}
    for lineno, row in iter_jsonl(path):
        for name in SAMPLE_FIELDS:
            if name not in row or row[name] is None:
                raise InputError(f"{path}:{lineno}: missing field '{name}'")
        if not isinstance(row["text"], str):
            raise InputError(f"{path}:{lineno}: field 'text' must be a string")
        example_id = str(row["example_id"])
        reference = references.get(example_id)
        if reference is None:
            raise InputError(f"{path}:{lineno}: example_id '{example_id}' is not in {data_dir}/train.jsonl "
                             "or eval.jsonl (were the samples made from another data run?)")
        parsed = row.get("parsed")
        if parsed is not None and not isinstance(parsed, dict):
            raise InputError(f"{path}:{lineno}: field 'parsed' must be an object")
        fields = ({name: str(parsed.get(name) or "") for name in FIELDS} if parsed
                  else parse_output(row["text"]).fields)
        sample = Sample(row=row, lineno=lineno, fields=fields, reference=reference)
        if sample.key in seen:
            raise InputError(f"{path}:{lineno}: (example_id, sample_id) = {sample.key} already on line "
                             f"{seen[sample.key]}")
        seen[sample.key] = lineno
        samples.append(sample)
        if limit is not None and len(samples) >= limit:
            break
    if not samples:
        raise InputError(f"{path}: no samples")
    return samples
