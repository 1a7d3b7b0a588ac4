"""Artifacts on disk: atomic writes, JSONL with file:line errors, resumable appends.

Stages communicate only through files. Each output directory carries a
`stage.json` holding the config that made it, so any stage can be rebuilt from
disk alone, and a stage is considered finished only once that file says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from rlaif_code import __version__
from rlaif_code.core.config import config_hash, to_dict


class InputError(ValueError):
    """Bad input data; the message names the file (and line where there is one)."""


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from err


def iter_jsonl(path: str | Path, *, tolerate_torn_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line.

    `tolerate_torn_tail` skips an unterminated final line: what a killed writer leaves
    behind in a file we append to. Anywhere else a bad line is an `InputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    with path.open(encoding="utf-8") as handle:
        lines = handle.readlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if tolerate_torn_tail and lineno == len(lines) and not line.endswith("\n"):
                return
            raise InputError(f"{path}:{lineno}: not valid JSON: {err.msg}") from err
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def read_jsonl(path: str | Path, **kwargs: Any) -> list[dict[str, Any]]:
    return [obj for _, obj in iter_jsonl(path, **kwargs)]


class JsonlAppender:
    """Append-only JSONL for resumable stages: each row is flushed and fsynced as written.

    On open, a torn last line (from a killed process) is cut off so appends stay valid.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                with self.path.open("r+b") as handle:
                    handle.truncate(keep)
        self._handle = self.path.open("a", encoding="utf-8")

    def existing(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path, tolerate_torn_tail=True) if self.path.exists() else []

    def write(self, row: dict[str, Any]) -> None:
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


STAGE_FILE = "stage.json"
METRICS_FILE = "metrics.json"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_stage_record(out_dir: str | Path, stage: str, cfg: Any, *, metrics: dict[str, Any] | None = None,
                       outputs: list[str] | None = None) -> dict[str, Any]:
    """Mark `out_dir` as the finished output of `stage` under `cfg` (written last, atomically)."""
    out_dir = Path(out_dir)
    record = {
        "stage": stage,
        "finished": True,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rlaif_code_version": __version__,
        "config_hash": config_hash(cfg),
        "config": to_dict(cfg),
        "run_identity": run_identity(cfg),
        "inputs": content_inputs(cfg),
        "metrics": metrics or {},
        "outputs": {name: file_sha256(out_dir / name) for name in (outputs or []) if (out_dir / name).is_file()},
    }
    # The metrics alone, for dashboards and scripts; stage.json (written last) stays the proof of completion.
    atomic_write_json(out_dir / METRICS_FILE, record["metrics"])
    atomic_write_json(out_dir / STAGE_FILE, record)
    return record


def read_stage_record(out_dir: str | Path) -> dict[str, Any] | None:
    path = Path(out_dir) / STAGE_FILE
    if not path.is_file():
        return None
    return read_json(path)


def content_inputs(cfg: Any) -> dict[str, str]:
    """Digests of the files a stage reads whose content its config does not capture (a rubric,
    a package list): a config class lists them in `fingerprint_inputs()`. They are part of the
    stage's identity in stage.json and in the pipeline's fingerprint."""
    inputs = getattr(cfg, "fingerprint_inputs", None)
    return dict(inputs()) if callable(inputs) else {}


def stage_is_done(out_dir: str | Path, stage: str, cfg: Any) -> bool:
    record = read_stage_record(out_dir)
    return bool(record and record.get("stage") == stage and record.get("finished")
                and record.get("config_hash") == config_hash(cfg)
                and record.get("inputs", {}) == content_inputs(cfg))


def finished_result(out_dir: str | Path, stage: str, cfg: Any) -> dict[str, Any] | None:
    """The metrics of `out_dir` when it already holds `stage`'s finished output under exactly
    `cfg` (marked `skipped`), else None: the one check every stage makes before working."""
    if not stage_is_done(out_dir, stage, cfg):
        return None
    return {**(read_stage_record(out_dir) or {}).get("metrics", {}), "skipped": True}


# ---------------------------------------------------------------- run identity

RUN_IDENTITY = "run_identity.json"


def run_identity(cfg: Any) -> dict[str, Any]:
    """What a run *is*: its config less the fields its class lists in `RESUMABLE` (budgets,
    logging, batch sizes that do not change results), which a resumed run may change."""
    may_change = getattr(type(cfg), "RESUMABLE", frozenset())
    return {key: value for key, value in to_dict(cfg).items() if key not in may_change}


def claim_run(folder: str | Path, cfg: Any, *, resuming: bool) -> None:
    """Record `cfg`'s identity as the owner of the partial work in `folder` (samples, checkpoints).

    When `resuming` (the folder holds work to continue) and that work was made by a run of
    another identity, refuse: mixing two runs' work would silently corrupt the result.
    """
    path = Path(folder) / RUN_IDENTITY
    identity = run_identity(cfg)
    if resuming:
        stored = read_json(path) if path.is_file() else {}
        changed = sorted(k for k in set(identity) | set(stored) if stored.get(k) != identity.get(k))
        if changed:
            raise InputError(f"{folder}: holds work made with other settings ({', '.join(changed)}); use "
                             "another out_dir or delete it to start over")
    atomic_write_json(path, identity)
