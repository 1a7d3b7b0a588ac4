"""The SQLite answer cache: keys, durability, concurrent writers."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

from rlaif_code.feedback.cache import JudgeCache, prompt_hash


def test_put_get_by_judge_model_and_hash(tmp_path: Path) -> None:
    with JudgeCache(tmp_path / "c.sqlite") as cache:
        key = prompt_hash({"messages": [{"role": "user", "content": "q"}]})
        cache.put("openai", "m1", key, {"answers": {"q": {"answer": "yes"}}})
        assert cache.get("openai", "m1", key) == {"answers": {"q": {"answer": "yes"}}}
        assert cache.get("openai", "m2", key) is None  # another model: another answer
        assert cache.get("hf", "m1", key) is None
        assert (cache.hits, cache.misses) == (1, 2)
        cache.put("openai", "m1", key, {"answers": "other"})  # a duplicate is ignored, not an error
        assert cache.get("openai", "m1", key)["answers"] == {"q": {"answer": "yes"}}
        assert cache.count() == 1


def test_hash_is_canonical() -> None:
    assert prompt_hash({"a": 1, "b": [1, 2]}) == prompt_hash({"b": [1, 2], "a": 1})
    assert prompt_hash({"a": 1}) != prompt_hash({"a": 2})


def test_wal_mode_and_every_write_is_committed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cache = JudgeCache(path)
    cache.put("openai", "m", "k1", {"v": 1})
    # Another connection sees the row before the writer closes: nothing waits for a final commit.
    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 1
    other.close()
    cache.close()


def test_get_many_in_chunks(tmp_path: Path) -> None:
    with JudgeCache(tmp_path / "c.sqlite") as cache:
        for i in range(1200):
            cache.put("openai", "m", f"k{i}", {"i": i})
        found = cache.get_many("openai", "m", [f"k{i}" for i in range(0, 1300)])
    assert len(found) == 1200 and found["k1199"] == {"i": 1199}


def _writer(path: str, worker: int) -> None:
    cache = JudgeCache(path)
    for i in range(150):
        # Half the keys are shared by every worker, as when two runs ask the same question.
        key = f"shared{i}" if i % 2 else f"w{worker}-{i}"
        cache.put("openai", "m", key, {"worker": worker, "i": i})
    cache.close()


def test_concurrent_writers_lose_nothing_and_duplicate_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite")
    JudgeCache(path).close()
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch threads
    workers = [ctx.Process(target=_writer, args=(path, w)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=60)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    with JudgeCache(path) as cache:
        assert cache.count() == 75 + 4 * 75
        assert cache.get("openai", "m", "shared1")["i"] == 1
