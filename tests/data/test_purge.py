"""``standby data purge``: captured pairs and their bus events, by date and by key id, as a user
runs it (a subprocess) on a SQLite bus and on the real Redis."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from standby.data.materializer import TOPIC
from standby.data.pairs import PairStore
from standby.store import open_bus
from tests.data.test_cli import ok, one_line_error, standby
from tests.store.conftest import Backend, inference_event

KEY_A = "aaaaaaaaaaaaaaaa"
KEY_B = "bbbbbbbbbbbbbbbb"
OLD = datetime(2020, 1, 1, tzinfo=UTC)


def _events() -> list[object]:
    """r0-r3 old (2020), r0-r1 and r4-r5 sent with key A, the rest with key B."""
    events = []
    for n in range(8):
        event = inference_event(n, key_id=KEY_A if n in (0, 1, 4, 5) else KEY_B)
        if n < 4:
            event = event.model_copy(update={"time": OLD})
        events.append(event)
    return events


async def _remaining(url: str) -> list[str]:
    """Request ids of the events left, read by a new consumer group."""
    group = f"check-{uuid.uuid4().hex[:8]}"
    async with open_bus(url) as bus:
        got = []
        while batch := await bus.consume(TOPIC, group, "c", count=100):
            got += [d.event.data.request_id for d in batch]  # type: ignore[union-attr]
            await bus.ack(TOPIC, group, [d.id for d in batch])
    return got


async def test_purge_by_date_then_by_key_id(backend: Backend, tmp_path: Path) -> None:
    url = backend.url()
    store_url = f"sqlite:///{tmp_path / 'pairs.db'}"
    async with open_bus(url) as bus:
        await bus.publish_many(TOPIC, _events())  # type: ignore[arg-type]
    common = ("--bus", url, "--store", store_url)
    ok("data", "materialize", "--once", *common)
    with PairStore(tmp_path / "pairs.db") as store:
        assert store.stats().total == 8  # a pair keeps its event's time

    run = ok("data", "purge", "--before", "2021-01-01", "--json", *common)
    assert json.loads(run.stdout) == {"pairs": 4, "events": 4, "responses": 0}
    assert await _remaining(url) == ["r4", "r5", "r6", "r7"]

    run = ok("data", "purge", "--key-id", KEY_A, *common)
    assert run.stdout.startswith("purged 2 pairs from ")
    assert ", 2 captured events from" in run.stdout
    with PairStore(tmp_path / "pairs.db") as store:
        left = sorted(p.request_id for p in store.pairs())
    assert left == ["r6", "r7"]
    assert await _remaining(url) == ["r6", "r7"]

    future = datetime.now(UTC).replace(year=2100).date().isoformat()
    run = ok("data", "purge", "--before", future, "--json", *common)
    assert json.loads(run.stdout) == {"pairs": 2, "events": 2, "responses": 0}
    with PairStore(tmp_path / "pairs.db") as store:
        assert store.stats().total == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "give --before DATE, --key-id ID or both"),
        (("--before", "yesterday"), "not a date: 'yesterday'"),
        (("--key-id", "sk-live-123"), "a key id is 16 lowercase hex digits"),
    ],
)
def test_purge_usage_errors_are_one_line(
    tmp_path: Path, args: tuple[str, ...], needle: str
) -> None:
    run = standby(
        "data",
        "purge",
        "--bus",
        f"sqlite:///{tmp_path / 'e.db'}",
        "--store",
        f"sqlite:///{tmp_path / 'p.db'}",
        *args,
    )
    one_line_error(run, needle)
