"""The gateway's stored responses (``ResponseKeeper``) on a real SQLite file: what it holds
unwritten is bounded. Past ``MAX_PENDING`` responses, or ``MAX_PENDING_BYTES`` of them, an answer
waits for the write instead of holding more in memory. Two keepers on one file are two worker
processes: a slow answer is still found by the other one."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

from standby.config import parse_settings
from standby.gateway.responses_ids import ResponseIds
from standby.gateway.responses_state import (
    MAX_PENDING,
    MAX_PENDING_BYTES,
    WRITE_MARGIN_S,
    ResponseKeeper,
    ResponseNotFound,
)
from tests.fixtures.fake_gateway import fake_config


def keeper(
    path: Path, max_body_bytes: int = 1 << 20, write_interval_s: float = 5
) -> ResponseKeeper:
    """Writes every 5 s by default: within a test, only a full memory or the close writes."""
    config = fake_config("primary")
    config["server"]["max_body_bytes"] = max_body_bytes
    config["responses"] = {
        "url": f"sqlite:///{path}",
        "write_interval_s": write_interval_s,
        "max_stored": 10 * MAX_PENDING,
    }
    return ResponseKeeper(parse_settings(config, "test"))


def rows(path: Path) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        if ("standby_responses",) not in tables:
            return 0
        return int(db.execute("SELECT COUNT(*) FROM standby_responses").fetchone()[0])


def response(n: int, text: str = "") -> dict[str, object]:
    return {"id": f"resp_{n}", "output": [{"type": "message", "content": text}]}


async def test_past_max_pending_responses_an_answer_waits_for_the_write(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    kept = keeper(path)
    try:
        for n in range(MAX_PENDING):
            await kept.keep("k", response(n), [], 0)
        assert rows(path) == 0  # all in memory, readable from there
        assert (await kept.load(f"resp_{MAX_PENDING - 1}", "k")).response["id"] == (
            f"resp_{MAX_PENDING - 1}"
        )
        await kept.keep("k", response(MAX_PENDING), [], 0)  # one more: it waits for the write
        assert rows(path) == MAX_PENDING + 1
    finally:
        await kept.close()


async def test_past_max_pending_bytes_an_answer_waits_for_the_write(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    size = 4 << 20
    kept = keeper(path, max_body_bytes=size + 1024)
    try:
        count = MAX_PENDING_BYTES // size
        for n in range(count):
            await kept.keep("k", response(n, "x" * (size - 200)), [], 0)
        assert rows(path) == 0
        await kept.keep("k", response(count, "x" * (size - 200)), [], 0)
        assert rows(path) == count + 1
    finally:
        await kept.close()


async def test_a_slow_answer_is_found_by_another_worker(tmp_path: Path) -> None:
    """Worker A's answer took longer than another worker waits on a miss (its id was made when
    the request came, WRITE_MARGIN_S + 0.2 s before): A writes it before answering, so worker B
    finds it at once instead of answering 404 (and a fast answer is still batched)."""
    path = tmp_path / "r.db"
    a, b = keeper(path, write_interval_s=0.02), keeper(path, write_interval_s=0.02)
    try:
        fast = ResponseIds(kept=True)
        await a.keep("k", {"id": fast.id, "output": []}, [], 0)
        assert rows(path) == 0  # batched: written within write_interval_s
        assert (await b.load(fast.id, "k")).response["id"] == fast.id  # B waits for the write
        slow = ResponseIds(kept=True)  # the request comes...
        await asyncio.sleep(WRITE_MARGIN_S + 0.2)  # ...and is answered later than B would wait
        await a.keep("k", {"id": slow.id, "output": []}, [], 0)
        assert rows(path) == 2  # written before the answer
        began = time.monotonic()
        assert (await b.load(slow.id, "k")).response["id"] == slow.id
        assert time.monotonic() - began < 0.5
        try:
            await b.load(ResponseIds(kept=True).id, "k")  # nobody's: 404 after the wait
            raise AssertionError("an unknown id was found")
        except ResponseNotFound:
            pass
    finally:
        await a.close()
        await b.close()
