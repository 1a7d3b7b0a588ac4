"""SQLite cache of judge answers, so no question is ever paid for twice.

Keyed by (judge kind, model, SHA-256 of the exact request: messages plus the
parameters that change the answer). Each answer is committed as soon as it arrives,
so a run that is killed keeps what it was told and a restart asks only the rest;
a rerun of a finished stage sends no request at all. WAL mode and a busy timeout let
several processes (two feedback runs, judge-check beside feedback) share one file:
readers never block, writers queue, and `INSERT OR IGNORE` makes a duplicate answer
to the same request a no-op rather than an error or a second row.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    judge TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (judge, model, prompt_hash)
)
"""


def prompt_hash(payload: Any) -> str:
    """A stable hash of a request: canonical JSON, keys sorted."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgeCache:
    def __init__(self, path: str | Path, *, busy_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, each write is its own durable transaction.
        self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                     check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(SCHEMA)
        self.hits = 0
        self.misses = 0

    def get(self, judge: str, model: str, key: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT value FROM answers WHERE judge=? AND model=? AND prompt_hash=?",
                                 (judge, model, key)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def get_many(self, judge: str, model: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT prompt_hash, value FROM answers WHERE judge=? AND model=? AND prompt_hash IN ({marks})",
                (judge, model, *chunk)).fetchall()
            found.update({key: json.loads(value) for key, value in rows})
        self.hits += len(found)
        self.misses += len(unique) - len(found)
        return found

    def put(self, judge: str, model: str, key: str, value: dict[str, Any]) -> None:
        self._conn.execute("INSERT OR IGNORE INTO answers (judge, model, prompt_hash, value, created_at) "
                           "VALUES (?, ?, ?, ?, ?)", (judge, model, key, json.dumps(value), time.time()))

    def count(self, judge: str | None = None) -> int:
        if judge is None:
            return self._conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM answers WHERE judge=?", (judge,)).fetchone()[0]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "JudgeCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
