"""SQLite specifics: crash safety, bad paths, a full or corrupt file, trimming, several
connections on one file."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from standby.store import BusError, Delivery, encode_event
from standby.store.sqlite_bus import SQLiteBus
from tests.store.conftest import inference_event

REPO = Path(__file__).resolve().parents[2]
TOPIC = "inference.completed"

WRITER = """
import asyncio, sys, time
from standby.store.sqlite_bus import SQLiteBus
from tests.store.conftest import inference_event

async def main(path: str, size: int) -> None:
    bus = SQLiteBus(path)
    n = 0
    while True:
        batch = [inference_event(n * size + i, response="z" * 2000) for i in range(size)]
        print("begin", n, flush=True)
        started = time.perf_counter()
        await bus.publish_many("inference.completed", batch)
        print("done", n, time.perf_counter() - started, flush=True)
        n += 1

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def wait_for_write_lock(path: Path) -> None:
    """Return once another connection holds the file's write lock (a transaction is open)."""
    db = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # SQLITE_BUSY: the writer is inside its batch
                return
            db.execute("ROLLBACK")
            time.sleep(0.001)
        pytest.fail("the writer never took the write lock")
    finally:
        db.close()


async def drain(bus: SQLiteBus, group: str) -> list[Delivery]:
    got: list[Delivery] = []
    while batch := await bus.consume(TOPIC, group, "c", count=1000):
        got += batch
        await bus.ack(TOPIC, group, [d.id for d in batch])
    return got


def write_until_killed(path: Path, size: int) -> int:
    """Run WRITER on ``path``; SIGKILL it inside its fourth batch's write transaction (seen from
    here as the write lock being held). Return how many batches it reported committed."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(size)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    try:
        for line in iter(child.stdout.readline, ""):
            if line.split() == ["begin", "3"]:
                break
        else:
            pytest.fail("the writer died")
        wait_for_write_lock(path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    done = 3 + child.stdout.read().count("done")  # 3 unless batch 3 beat the signal
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return done


async def test_sigkill_mid_batch_loses_only_the_unfinished_batch(tmp_path: Path) -> None:
    """A 7 MB batch spills into the WAL before it commits; killed there, the file opens
    cleanly and holds exactly the three batches that had committed."""
    path, size = tmp_path / "events.db", 3000
    assert await asyncio.to_thread(write_until_killed, path, size) == 3

    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    bus = SQLiteBus(path)
    got = await drain(bus, "after-crash")
    assert len(got) == 3 * size
    assert [d.event.data.request_id for d in got] == [f"r{i}" for i in range(len(got))]  # type: ignore[union-attr]
    await bus.publish(TOPIC, inference_event(-1))  # and it is writable again
    await bus.close()


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_unwritable_path_is_a_clear_error(tmp_path: Path, where: str) -> None:
    if where == "under-a-file":
        (tmp_path / "plain-file").write_text("x")
        path = tmp_path / "plain-file" / "events.db"
    else:
        path = Path("/proc/standby-bus-test/events.db")
    with pytest.raises(BusError) as err:
        SQLiteBus(path)
    assert err.value.reason == "readonly"
    assert str(err.value).startswith(f"sqlite bus {path}: cannot create directory")


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"this is not a database " * 400)
    with pytest.raises(BusError) as err:
        SQLiteBus(path)
    assert err.value.reason == "corrupt"
    assert str(err.value) == f"sqlite bus {path}: " + (
        "the file is not an SQLite database (corrupt?) (SQLITE_NOTADB)"
    )


async def test_full_file_is_a_clear_error_and_keeps_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    bus = SQLiteBus(path, max_bytes=128 * 1024)  # the disk is "full" at 128 KiB
    written = 0
    with pytest.raises(BusError) as err:
        for i in range(1000):
            await bus.publish(TOPIC, inference_event(i, response="f" * 3000))
            written += 1
    assert err.value.reason == "full"
    assert "the disk or the bus's size limit is full (SQLITE_FULL)" in str(err.value)
    await bus.check()  # still open and consistent
    await bus.close()
    bigger = SQLiteBus(path)
    assert len(await drain(bigger, "g")) == written > 0
    await bigger.close()


async def test_file_is_in_wal_mode_and_created_with_its_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "events.db"
    bus = SQLiteBus(path)
    await bus.publish(TOPIC, inference_event(0))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    await bus.close()


async def test_maxlen_keeps_the_newest_and_forgets_leases_on_trimmed_events(
    tmp_path: Path,
) -> None:
    bus = SQLiteBus(tmp_path / "events.db", maxlen=3, claim_after_s=0.2)
    await bus.publish(TOPIC, inference_event(0))
    assert len(await bus.consume(TOPIC, "g", "crashed")) == 1  # r0 leased, never acked
    await bus.publish_many(TOPIC, [inference_event(i) for i in range(1, 6)])
    assert [d.event.data.request_id for d in await drain(bus, "new")] == ["r3", "r4", "r5"]  # type: ignore[union-attr]
    await asyncio.sleep(0.3)
    got = await bus.consume(TOPIC, "g", "c")  # r0 is gone: no redelivery of a trimmed event
    assert [d.event.data.request_id for d in got] == ["r3", "r4", "r5"]  # type: ignore[union-attr]
    await bus.close()


async def test_undecodable_rows_are_logged_acked_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.db"
    bus = SQLiteBus(path)
    await bus.publish(TOPIC, inference_event(0))
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("INSERT INTO events (topic, offset, body) VALUES (?, 2, ?)", (TOPIC, b"{oops"))
    db.execute("INSERT INTO events (topic, offset, body) VALUES (?, 3, ?)", (TOPIC, b"[]"))
    db.execute("UPDATE topics SET last_offset = 3 WHERE topic = ?", (TOPIC,))
    db.close()
    await bus.publish(TOPIC, inference_event(4))
    with caplog.at_level(logging.ERROR, "standby.events"):
        got = await bus.consume(TOPIC, "g", "c")
    assert [d.event.data.request_id for d in got] == ["r0", "r4"]  # type: ignore[union-attr]
    assert "dropping undecodable entry 2" in caplog.text
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT offset FROM inflight ORDER BY offset").fetchall() == [(1,), (4,)]
    db.close()
    await bus.close()


async def test_two_connections_on_one_file_see_each_other(tmp_path: Path) -> None:
    """Like two processes: the consumer polls, so it needs no signal from the publisher."""
    path = tmp_path / "events.db"
    writer, reader = SQLiteBus(path), SQLiteBus(path)

    async def later() -> None:
        await asyncio.sleep(0.2)
        await writer.publish(TOPIC, inference_event(7))

    task = asyncio.create_task(later())
    started = time.monotonic()
    got = await reader.consume(TOPIC, "g", "c", block_s=5)
    assert time.monotonic() - started < 1.5
    assert [d.event.data.request_id for d in got] == ["r7"]  # type: ignore[union-attr]
    await task
    await writer.close()
    await reader.close()


async def test_encoded_bytes_are_stored_as_is(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    bus = SQLiteBus(path)
    event = inference_event(0)
    await bus.publish(TOPIC, event)
    await bus.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT body FROM events").fetchone()[0] == encode_event(event)
    db.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(
        BusError, match=r"written by a newer standby \(schema 99, this one knows 1\)"
    ):
        SQLiteBus(path)
