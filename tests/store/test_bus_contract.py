"""The bus contract: every test runs on SQLite and on real Redis (the ``backend`` fixture)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from standby.store import (
    MAX_EVENT_BYTES,
    Bus,
    BusError,
    Delivery,
    EventTooLarge,
    InferenceCompletedData,
    PipelineEvent,
    encode_inference_completed,
)
from tests.store.conftest import CLAIM_AFTER_S, Backend, inference_event

TOPIC = "inference.completed"


def request_ids(deliveries: list[Delivery]) -> list[str]:
    return [d.event.data.request_id for d in deliveries]  # type: ignore[union-attr]


async def drain(bus: Bus, group: str, consumer: str = "c", *, ack: bool = True) -> list[Delivery]:
    got: list[Delivery] = []
    while batch := await bus.consume(TOPIC, group, consumer, count=50):
        got += batch
        if ack:
            await bus.ack(TOPIC, group, [d.id for d in batch])
    return got


async def test_consume_returns_events_in_publish_order(bus: Bus) -> None:
    events = [inference_event(i) for i in range(5)]
    offsets = [await bus.publish(TOPIC, e) for e in events]
    assert len(set(offsets)) == 5
    got = await bus.consume(TOPIC, "g", "c", count=10)
    assert [d.event for d in got] == events
    assert [d.id for d in got] == offsets
    assert {d.attempt for d in got} == {1}


async def test_each_group_sees_every_event(bus: Bus) -> None:
    await bus.publish_many(TOPIC, [inference_event(i) for i in range(4)])
    first = await drain(bus, "materializer")
    second = await drain(bus, "auditor")
    assert request_ids(first) == request_ids(second) == ["r0", "r1", "r2", "r3"]
    await bus.publish(TOPIC, inference_event(4))
    assert request_ids(await drain(bus, "auditor")) == ["r4"]
    assert request_ids(await drain(bus, "materializer")) == ["r4"]


async def test_consumers_of_one_group_split_the_work(bus: Bus) -> None:
    await bus.publish_many(TOPIC, [inference_event(i) for i in range(10)])
    one = await bus.consume(TOPIC, "g", "one", count=4)
    two = await bus.consume(TOPIC, "g", "two", count=100)
    assert request_ids(one) == [f"r{i}" for i in range(4)]
    assert request_ids(two) == [f"r{i}" for i in range(4, 10)]
    assert await bus.consume(TOPIC, "g", "three") == []


async def test_ack_settles_a_delivery_for_good(bus: Bus) -> None:
    await bus.publish_many(TOPIC, [inference_event(i) for i in range(3)])
    got = await bus.consume(TOPIC, "g", "one")
    assert await bus.ack(TOPIC, "g", [d.id for d in got]) == 3
    assert await bus.ack(TOPIC, "g", [d.id for d in got]) == 0  # already settled
    await asyncio.sleep(CLAIM_AFTER_S + 0.2)
    assert await bus.consume(TOPIC, "g", "two") == []


async def test_unacked_events_go_to_another_consumer_after_the_lease(bus: Bus) -> None:
    await bus.publish_many(TOPIC, [inference_event(i) for i in range(3)])
    crashed = await bus.consume(TOPIC, "g", "crashed")
    await bus.ack(TOPIC, "g", [crashed[0].id])  # it finished one, then died
    assert await bus.consume(TOPIC, "g", "healthy") == []  # leases not expired yet
    await asyncio.sleep(CLAIM_AFTER_S + 0.2)
    again = await bus.consume(TOPIC, "g", "healthy")
    assert request_ids(again) == ["r1", "r2"]
    assert [d.attempt for d in again] == [2, 2]
    assert [d.id for d in again] == [d.id for d in crashed[1:]]
    assert await bus.ack(TOPIC, "g", [d.id for d in again]) == 2
    await asyncio.sleep(CLAIM_AFTER_S + 0.2)
    assert await bus.consume(TOPIC, "g", "third") == []


async def test_redeliveries_come_before_new_events(bus: Bus) -> None:
    await bus.publish(TOPIC, inference_event(0))
    await bus.consume(TOPIC, "g", "crashed")
    await bus.publish(TOPIC, inference_event(1))
    await asyncio.sleep(CLAIM_AFTER_S + 0.2)
    got = await bus.consume(TOPIC, "g", "healthy")
    assert [(d.event.data.request_id, d.attempt) for d in got] == [("r0", 2), ("r1", 1)]  # type: ignore[union-attr]


async def test_publish_encoded_stores_the_bodies_as_given(bus: Bus) -> None:
    """The capture writer's path: events encoded without the envelope model read back the
    same as events published as models; an oversized body is refused before anything is
    written."""
    data = inference_event(0).data.model_dump(mode="json")
    bodies = [
        encode_inference_completed({**data, "request_id": f"e{i}"}, source="tests")
        for i in range(3)
    ]
    await bus.publish_encoded(TOPIC, bodies)
    got = await bus.consume(TOPIC, "g", "c")
    assert request_ids(got) == ["e0", "e1", "e2"]
    assert got[0].event.data == InferenceCompletedData.model_validate({**data, "request_id": "e0"})
    with pytest.raises(EventTooLarge):
        await bus.publish_encoded(TOPIC, [bodies[0], b"x" * (MAX_EVENT_BYTES + 1)])
    assert request_ids(await drain(bus, "another")) == ["e0", "e1", "e2"]  # nothing more


async def test_publish_many_is_all_or_nothing(bus: Bus) -> None:
    huge = inference_event(1, response="x" * (1 << 20))
    with pytest.raises(EventTooLarge) as err:
        await bus.publish_many(TOPIC, [inference_event(0), huge, inference_event(2)])
    assert err.value.reason == "too_large" and "over the 1048576-byte limit" in str(err.value)
    assert await bus.consume(TOPIC, "g", "c") == []
    assert await bus.publish_many(TOPIC, []) == []


async def test_batches_become_visible_whole(bus: Bus) -> None:
    """A reader never sees part of a batch: every read returns whole batches of 25."""

    async def publisher() -> None:
        for b in range(20):
            await bus.publish_many(TOPIC, [inference_event(b * 25 + i) for i in range(25)])
            await asyncio.sleep(0)

    task = asyncio.create_task(publisher())
    seen = 0
    while seen < 500:
        batch = await bus.consume(TOPIC, "g", "c", count=1000, block_s=1)
        assert len(batch) % 25 == 0
        seen += len(batch)
    await task


async def test_large_event_is_rejected_before_writing(bus: Bus) -> None:
    with pytest.raises(EventTooLarge):
        await bus.publish(TOPIC, inference_event(0, response="y" * (1 << 20)))
    assert await bus.consume(TOPIC, "g", "c") == []


async def test_idempotency_helper(bus: Bus) -> None:
    events = [inference_event(i) for i in range(3)]
    await bus.publish_many(TOPIC, [*events, events[0]])  # a producer retry: r0 twice
    got = await bus.consume(TOPIC, "g", "c")
    fresh = await bus.unseen("materializer", got)
    assert request_ids(fresh) == ["r0", "r1", "r2"]
    await bus.mark_seen("materializer", [d.event.id for d in fresh])
    assert await bus.seen("materializer", events[1].id)
    assert not await bus.seen("other-scope", events[1].id)
    assert await bus.unseen("materializer", got) == []
    await bus.mark_seen("short", [events[2].id], ttl_s=0.2)
    assert await bus.seen_many("short", [e.id for e in events]) == {events[2].id}
    await asyncio.sleep(0.3)
    assert not await bus.seen("short", events[2].id)


async def test_reopening_keeps_events_cursors_and_leases(backend: Backend) -> None:
    bus = backend.open()
    await bus.publish_many(TOPIC, [inference_event(i) for i in range(3)])
    got = await bus.consume(TOPIC, "g", "c", count=2)
    await bus.ack(TOPIC, "g", [got[0].id])
    await bus.close()
    with pytest.raises(BusError) as err:
        await bus.publish(TOPIC, inference_event(9))
    assert err.value.reason == "closed"

    reopened = backend.open()
    await reopened.check()
    assert request_ids(await drain(reopened, "new-group")) == ["r0", "r1", "r2"]
    rest = await reopened.consume(TOPIC, "g", "c2")  # the cursor survived: only r2 is new
    assert request_ids(rest) == ["r2"]
    await reopened.ack(TOPIC, "g", [rest[0].id])
    await asyncio.sleep(CLAIM_AFTER_S + 0.2)
    again = await reopened.consume(TOPIC, "g", "c2")
    assert [(d.event.data.request_id, d.attempt) for d in again] == [("r1", 2)]  # type: ignore[union-attr]


async def test_many_parallel_publishers_lose_nothing(backend: Backend) -> None:
    bus, other = backend.open(claim_after_s=30), backend.open(claim_after_s=30)

    async def publisher(p: int) -> list[str]:
        ids = []
        for i in range(10):
            events = [inference_event(p * 1000 + i * 10 + j) for j in range(1 + i % 3)]
            target = bus if i % 2 else other
            if len(events) == 1:
                await target.publish(TOPIC, events[0])
            else:
                await target.publish_many(TOPIC, events)
            ids += [e.id for e in events]
        return ids

    async def consumer(b: Bus, name: str, received: list[str], done: asyncio.Event) -> None:
        while True:
            finished = done.is_set()  # all published before this read: empty means drained
            batch = await b.consume(TOPIC, "g", name, count=37, block_s=0.05)
            if not batch and finished:
                return
            received += [d.event.id for d in batch]
            await b.ack(TOPIC, "g", [d.id for d in batch])

    done = asyncio.Event()
    got_a: list[str] = []
    got_b: list[str] = []
    consumers = [
        asyncio.create_task(consumer(bus, "a", got_a, done)),
        asyncio.create_task(consumer(other, "b", got_b, done)),
    ]
    published = [i for ids in await asyncio.gather(*(publisher(p) for p in range(20))) for i in ids]
    done.set()
    await asyncio.gather(*consumers)
    assert len(published) == 20 * sum(1 + i % 3 for i in range(10))
    assert sorted(got_a + got_b) == sorted(published)  # each exactly once, none lost
    assert got_a and got_b


async def test_blocking_consume_wakes_on_publish_and_times_out(bus: Bus) -> None:
    started = time.monotonic()
    assert await bus.consume(TOPIC, "g", "c", block_s=0.3) == []
    assert 0.25 <= time.monotonic() - started < 2

    async def later() -> None:
        await asyncio.sleep(0.2)
        await bus.publish(TOPIC, PipelineEvent(type="model.promoted", source="t", data={"v": 2}))

    task = asyncio.create_task(later())
    started = time.monotonic()
    got = await bus.consume(TOPIC, "g", "c", block_s=5)
    assert time.monotonic() - started < 1.5
    assert [d.event.type for d in got] == ["model.promoted"]
    await task


async def test_names_are_checked(bus: Bus) -> None:
    with pytest.raises(ValueError, match="invalid topic name"):
        await bus.publish("bad topic", inference_event(0))
    with pytest.raises(ValueError, match="invalid group name"):
        await bus.consume(TOPIC, "x:y", "c")
    with pytest.raises(ValueError, match="invalid scope name"):
        await bus.seen("a scope", "id")
    with pytest.raises(ValueError, match="not a delivery id"):
        await bus.ack(TOPIC, "g", ["nope"])


async def test_a_blocked_consumer_takes_over_an_expiring_lease(bus: Bus) -> None:
    await bus.publish(TOPIC, inference_event(0))
    await bus.consume(TOPIC, "g", "crashed")
    started = time.monotonic()
    got = await bus.consume(TOPIC, "g", "waiting", block_s=10)
    assert time.monotonic() - started < CLAIM_AFTER_S + 1.5
    assert [(d.event.data.request_id, d.attempt) for d in got] == [("r0", 2)]  # type: ignore[union-attr]


async def test_purge_deletes_by_time_and_by_key_id_and_drops_their_deliveries(bus: Bus) -> None:
    old = [
        inference_event(i).model_copy(update={"time": datetime(2020, 1, 1, tzinfo=UTC)})
        for i in range(3)
    ]
    mine = inference_event(3, key_id="feedfacefeedface")
    others = [inference_event(i) for i in (4, 5)]
    await bus.publish_many(TOPIC, [*old, mine, *others])
    in_flight = await bus.consume(TOPIC, "g", "c", count=2)  # r0, r1 leased, not acked
    assert request_ids(in_flight) == ["r0", "r1"]

    gone = await bus.purge(TOPIC, before=datetime(2021, 1, 1, tzinfo=UTC))
    assert sorted(gone) == sorted(e.id for e in old)
    assert await bus.purge(TOPIC, key_id="feedfacefeedface") == [mine.id]
    assert await bus.purge(TOPIC, key_id="feedfacefeedface") == []
    assert await bus.purge("nothing.here", before=datetime(2030, 1, 1, tzinfo=UTC)) == []

    await asyncio.sleep(CLAIM_AFTER_S + 0.2)  # the purged leases would be redelivered now
    assert request_ids(await drain(bus, "g")) == ["r4", "r5"]
    assert request_ids(await drain(bus, "fresh")) == ["r4", "r5"]
