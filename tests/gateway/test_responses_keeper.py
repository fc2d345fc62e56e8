"""The gateway's stored responses (``ResponseKeeper``) on a real SQLite file: what it holds
unwritten is bounded. Past ``MAX_PENDING`` responses, or ``MAX_PENDING_BYTES`` of them, an answer
waits for the write instead of holding more in memory."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from standby.config import parse_settings
from standby.gateway.responses_state import MAX_PENDING, MAX_PENDING_BYTES, ResponseKeeper
from tests.fixtures.fake_gateway import fake_config


def keeper(path: Path, max_body_bytes: int = 1 << 20) -> ResponseKeeper:
    """Writes every 5 s: within a test, only a full memory or the close writes."""
    config = fake_config("primary")
    config["server"]["max_body_bytes"] = max_body_bytes
    config["responses"] = {
        "url": f"sqlite:///{path}",
        "write_interval_s": 5,
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
