"""Redis specifics: connection errors without secrets, stream trimming, a deleted stream, foreign
entries, RESP3."""

from __future__ import annotations

import logging
import time

import pytest
import redis.asyncio

from standby.store import BusError, open_bus
from standby.store.redis_bus import RedisBus
from tests.store.conftest import Backend, inference_event

TOPIC = "inference.completed"


async def test_unreachable_server_is_a_clear_error_without_the_password() -> None:
    bus = open_bus("redis://:hunter2@127.0.0.1:1/0?socket_connect_timeout=1")
    assert bus.url == "redis://:***@127.0.0.1:1/0?socket_connect_timeout=1"
    for call in (bus.check(), bus.publish(TOPIC, inference_event(0))):
        with pytest.raises(BusError) as err:
            await call
        assert err.value.reason == "unavailable"
        assert str(err.value).startswith("redis bus redis://:***@127.0.0.1:1/0")
        assert "cannot reach the server" in str(err.value)
        assert "hunter2" not in str(err.value)
    await bus.close()


async def test_streams_are_trimmed_approximately_to_maxlen(
    redis_backend: Backend, raw_redis: redis.asyncio.Redis
) -> None:
    bus = redis_backend.open(maxlen=50)
    assert isinstance(bus, RedisBus) and bus.maxlen == 50
    for start in range(0, 1000, 100):
        await bus.publish_many(TOPIC, [inference_event(start + i) for i in range(100)])
    length = await raw_redis.xlen(f"{redis_backend.prefix}topic:{TOPIC}")
    assert 50 <= length < 300  # "~": whole macro-nodes are dropped, never fewer than maxlen


async def test_a_deleted_stream_and_group_are_recreated(
    redis_backend: Backend, raw_redis: redis.asyncio.Redis
) -> None:
    bus = redis_backend.open()
    await bus.publish(TOPIC, inference_event(0))
    assert len(await bus.consume(TOPIC, "g", "c")) == 1
    await raw_redis.delete(f"{redis_backend.prefix}topic:{TOPIC}")
    assert await bus.consume(TOPIC, "g", "c") == []  # NOGROUP handled: group made again
    await bus.publish(TOPIC, inference_event(1))
    got = await bus.consume(TOPIC, "g", "c")
    assert [d.event.data.request_id for d in got] == ["r1"]  # type: ignore[union-attr]


async def test_foreign_entries_are_logged_acked_and_skipped(
    redis_backend: Backend, raw_redis: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    bus = redis_backend.open()
    key = f"{redis_backend.prefix}topic:{TOPIC}"
    client = raw_redis
    await bus.publish(TOPIC, inference_event(0))
    entry = await client.xadd(key, {"other": "field"})
    bad = entry.decode() if isinstance(entry, bytes) else entry
    await client.xadd(key, {"e": b'{"specversion": "9.9", "type": "some.new.type"}'})
    await bus.publish(TOPIC, inference_event(3))
    with caplog.at_level(logging.ERROR, "standby.events"):
        got = await bus.consume(TOPIC, "g", "c")
    assert [d.event.data.request_id for d in got] == ["r0", "r3"]  # type: ignore[union-attr]
    assert f"dropping undecodable entry {bad}" in caplog.text
    assert "unsupported event specversion '9.9'" in caplog.text
    pending = await client.xpending(key, "g")
    assert pending["pending"] == 2  # only the two good ones wait for an ack


async def test_resp3_connections_work(redis_backend: Backend) -> None:
    bus = redis_backend.open(protocol=3)
    await bus.publish_many(TOPIC, [inference_event(i) for i in range(3)])
    got = await bus.consume(TOPIC, "g", "c")
    assert [d.event.data.request_id for d in got] == ["r0", "r1", "r2"]  # type: ignore[union-attr]
    assert await bus.ack(TOPIC, "g", [d.id for d in got]) == 3


async def test_blocking_longer_than_the_socket_timeout(redis_backend: Backend) -> None:
    bus = redis_backend.open(claim_after_s=30, socket_timeout=0.5)
    started = time.monotonic()
    assert await bus.consume(TOPIC, "g", "c", block_s=1.2) == []
    assert 1.1 < time.monotonic() - started < 3
