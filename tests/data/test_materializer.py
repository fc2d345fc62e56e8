"""The materializer on real buses (a SQLite file and the real Redis) into a real pair store:
only the primary's own complete answers become pairs; redeliveries write nothing twice; the
newest answer wins; a snapshot is published; and, end to end, a gateway's captured traffic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from standby.data.materializer import (
    GROUP,
    SNAPSHOT_TOPIC,
    TOPIC,
    Materializer,
    classify,
    take_snapshot,
)
from standby.data.pairs import Candidate, PairStore, prompt_id_of
from standby.store import Bus, ChatMessage, InferenceCompleted, PipelineEvent
from standby.store.envelope import CapturedTool, CapturedToolCall
from tests.data import Stores
from tests.fixtures.gateway import StartGateway, base_config
from tests.fixtures.sim import RunningSim
from tests.store.conftest import Backend, inference_event

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def event(n: int, *, age_s: float = 0, **data: Any) -> InferenceCompleted:
    e = inference_event(n, **data)
    return e.model_copy(update={"time": T0 - timedelta(seconds=age_s)})


def mixed() -> list[InferenceCompleted]:
    """Two good primary answers and one of each thing that must never become a pair."""
    user = ChatMessage(role="user", content="and then?")
    return [
        event(1),
        event(2, provenance="fallback", backend="gemma", fallback_reason="server_error"),
        event(3, provenance="stitched", backend="gemma", fallback_reason="mid_stream"),
        event(4, finish_reason="content_filter"),
        event(5, finish_reason="length"),
        event(6, response="   "),
        event(7, messages=[user, ChatMessage(role="assistant", content="so"), user]),
        event(8, finish_reason="tool_calls"),
        event(
            9,
            messages=[
                ChatMessage(role="system", content="Be brief."),
                ChatMessage(role="user", content="question 9"),
            ],
        ),
    ]


async def test_only_primary_complete_answers_become_pairs(bus: Bus, store: PairStore) -> None:
    await bus.publish_many(TOPIC, mixed())
    counts = await Materializer(bus, store, consumer="m1").run(once=True)
    assert (counts.events, counts.written) == (9, 2)
    assert counts.skipped == {
        "fallback": 1,
        "stitched": 1,
        "blocked": 1,
        "length": 1,
        "empty_response": 1,
        "multi_turn": 1,
        "tool_calls": 1,
    }
    pairs = {p.request_id: p for p in store.pairs()}
    assert sorted(pairs) == ["r1", "r9"]
    assert pairs["r9"].messages[0] == {"role": "system", "content": "Be brief."}
    assert pairs["r1"].messages == [
        {"role": "user", "content": "question 1"},
        {"role": "assistant", "content": "an answer"},
    ]
    # Everything was acked: the group has nothing left, now or after a lease would expire.
    await asyncio.sleep(0.4)
    assert await bus.consume(TOPIC, GROUP, "m2") == []
    assert store.stats().counters["skipped.fallback"] == 1


async def test_events_that_use_tools_become_tool_pairs(bus: Bus, store: PairStore) -> None:
    """A call, a text answer with tools offered, and the answer after a tool result become
    pairs in TRL's tool-calling format (an empty-text call passes the length filter); the
    fallback's answer and a turn whose history has an assistant text turn do not."""
    call = CapturedToolCall(id="c1", name="get_weather", arguments='{"city":"Paris"}')
    tool = CapturedTool(name="get_weather", parameters={"type": "object"})
    other_id = call.model_copy(update={"id": "c9", "arguments": '{ "city": "Paris" }'})
    asked = ChatMessage(role="user", content="Weather in Paris?")
    looped = [
        asked,
        ChatMessage(role="assistant", content="", tool_calls=[call]),
        ChatMessage(role="tool", content="sunny", tool_call_id="c1", name="get_weather"),
    ]
    await bus.publish_many(
        TOPIC,
        [
            event(1, response="", finish_reason="tool_calls", tools=[tool], tool_calls=[call]),
            event(2, response="Probably sunny.", tools=[tool]),  # offered, not called
            event(3, response="It is sunny.", messages=looped, tools=[tool]),
            event(4, provenance="fallback", backend="gemma", tools=[tool]),
            event(5),
            event(
                6,
                tools=[tool],
                messages=[asked, ChatMessage(role="assistant", content="Hm."), asked],
            ),
            # The same step of another conversation (its own call id): a duplicate prompt.
            event(
                8,
                response="It is sunny.",
                tools=[tool],
                messages=[
                    asked,
                    ChatMessage(role="assistant", content="", tool_calls=[other_id]),
                    looped[2].model_copy(update={"tool_call_id": "c9"}),
                ],
                age_s=60,
            ),
            event(
                7,
                response="",
                finish_reason="tool_calls",
                tools=[tool],
                tool_calls=[call.model_copy(update={"arguments": "[1]"})],
            ),
        ],
    )
    counts = await Materializer(bus, store, consumer="m1").run(once=True)
    assert (counts.events, counts.written, counts.duplicate) == (8, 4, 1)
    assert counts.skipped == {"fallback": 1, "multi_turn": 1, "bad_tool_arguments": 1}
    pairs = {p.request_id: p for p in store.pairs()}
    assert sorted(pairs) == ["r1", "r2", "r3", "r5"]
    declared = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    openai_call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    assert pairs["r1"].tools == declared
    assert pairs["r1"].messages[-1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [openai_call],
    }
    assert pairs["r3"].messages[1:] == [
        {"role": "assistant", "content": "", "tool_calls": [openai_call]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1", "name": "get_weather"},
        {"role": "assistant", "content": "It is sunny."},
    ]
    assert pairs["r5"].tools is None  # a plain-text pair is what it was
    assert pairs["r5"].messages == [
        {"role": "user", "content": pairs["r5"].prompt},
        {"role": "assistant", "content": pairs["r5"].messages[-1]["content"]},
    ]
    # A tool pair's id adds the tools and the history to its question's; a plain id is as ever.
    assert pairs["r3"].prompt_id != prompt_id_of("Weather in Paris?")
    assert pairs["r5"].prompt_id == prompt_id_of(pairs["r5"].prompt)


async def test_a_redelivered_event_is_not_written_twice(bus: Bus, store: PairStore) -> None:
    third = event(3)
    await bus.publish_many(TOPIC, [event(1), event(2), third])
    # A materializer that crashed after its write committed, before it acked:
    crashed = await bus.consume(TOPIC, GROUP, "crashed")
    candidates = [c for d in crashed if isinstance(c := classify(d.event), Candidate)]
    store.write(candidates[:2])
    # The same event published twice (a producer retry) is also one pair.
    await bus.publish(TOPIC, third)
    await asyncio.sleep(0.4)  # past claim_after_s: the crashed consumer's events come back

    counts = await Materializer(bus, store, consumer="m1").run(once=True)
    assert counts.redelivered == 3 and counts.written == 1 and counts.duplicate == 0
    assert sorted(p.request_id for p in store.pairs()) == ["r1", "r2", "r3"]
    assert await Materializer(bus, store, consumer="m1").run(once=True) == type(counts)()


async def test_events_marked_seen_but_not_acked_are_only_acked(bus: Bus, store: PairStore) -> None:
    await bus.publish_many(TOPIC, [event(1), event(2)])
    crashed = await bus.consume(TOPIC, GROUP, "crashed")
    await bus.mark_seen(GROUP, [d.event.id for d in crashed])  # crashed between seen and ack
    await asyncio.sleep(0.4)
    counts = await Materializer(bus, store, consumer="m1").run(once=True)
    assert (counts.events, counts.redelivered, counts.written) == (2, 2, 0)
    assert await bus.consume(TOPIC, GROUP, "m2") == []


async def test_dedup_keeps_the_newest_answer(bus: Bus, store: PairStore) -> None:
    same = {"messages": [ChatMessage(role="user", content="The  Question")]}
    await bus.publish_many(
        TOPIC,
        [
            event(1, response="newest", age_s=0, **same),
            event(2, response="oldest", age_s=120, **same),
            event(
                3,
                response="middle",
                age_s=60,
                messages=[ChatMessage(role="user", content="  the question ")],
            ),
        ],
    )
    counts = await Materializer(bus, store, consumer="m1", batch_size=1).run(once=True)
    assert (counts.written, counts.duplicate, counts.replaced) == (1, 2, 0)
    [pair] = store.pairs()
    assert (pair.messages[-1]["content"], pair.request_id) == ("newest", "r1")


async def test_the_same_prompt_lands_in_the_same_split_in_any_store(
    backend: Backend, stores: Stores, tmp_path: Path
) -> None:
    events = [event(i) for i in range(200)]
    a, b = stores.open("a.db", test_fraction=0.25), stores.open("b.db", test_fraction=0.25)
    other = Backend(backend.kind, tmp_path / "other")  # a second bus on its own storage
    try:
        for bus, store, order in ((backend.open(), a, events), (other.open(), b, events[::-1])):
            await bus.publish_many(TOPIC, order)
            assert (await Materializer(bus, store, batch_size=7).run(once=True)).written == 200
    finally:
        await other.cleanup()
    splits = [{p.prompt_id: p.split for p in s.pairs()} for s in (a, b)]
    assert splits[0] == splits[1] and len(splits[0]) == 200
    assert 0 < sum(v == "test_sft" for v in splits[0].values()) < 200
    assert a.snapshot().content_hash == b.snapshot().content_hash


async def test_length_filters_reject_and_count(bus: Bus, stores: Stores) -> None:
    store = stores.open(max_response_chars=10)
    await bus.publish_many(TOPIC, [event(1, response="short"), event(2, response="x" * 11)])
    counts = await Materializer(bus, store, consumer="m1").run(once=True)
    assert (counts.written, counts.rejected) == (1, {"response_too_long": 1})
    assert store.stats().counters["rejected.response_too_long"] == 1


async def test_snapshot_publishes_dataset_snapshot_created(bus: Bus, store: PairStore) -> None:
    await bus.publish_many(TOPIC, [event(i) for i in range(5)])
    await Materializer(bus, store, consumer="m1").run(once=True)
    snap = await take_snapshot(store, bus)
    [got] = await bus.consume(SNAPSHOT_TOPIC, "pipeline", "p1")
    assert isinstance(got.event, PipelineEvent) and got.event.type == "dataset.snapshot_created"
    assert got.event.data["snapshot_id"] == snap.id
    assert got.event.data["content_hash"] == snap.content_hash
    assert got.event.data["counts"]["total"] == 5 == snap.counts["new"]


async def test_the_loop_picks_up_new_events_and_stops_cleanly(bus: Bus, store: PairStore) -> None:
    stop = asyncio.Event()
    worker = asyncio.create_task(
        Materializer(bus, store, consumer="m1", block_s=0.1).run(stop=stop)
    )
    for n in range(3):
        await bus.publish(TOPIC, event(n))
        await asyncio.sleep(0.05)
    for _ in range(100):
        if len(store.pairs()) == 3:
            break
        await asyncio.sleep(0.05)
    stop.set()
    counts = await asyncio.wait_for(worker, 5)
    assert counts.written == 3 and len(store.pairs()) == 3


async def test_captured_gateway_traffic_end_to_end(
    sim: RunningSim,
    tiny_model_dir: Path,
    tmp_path: Path,
    start_gateway: StartGateway,
    store: PairStore,
) -> None:
    """A real gateway captures primary, stitched and fallback answers; only the primary's
    become pairs."""
    db = tmp_path / "events.db"
    config = base_config(sim.url, tiny_model_dir)
    config["capture"] = {"enabled": True, "bus": f"sqlite:///{db}", "flush_interval_s": 0.05}
    gw = start_gateway(config, breaker={"cooldown_s": 60})
    client = gw.client()
    ask = [{"role": "user", "content": "Capture this please."}]
    primary = client.chat.completions.create(model="gemini-2.5-flash", messages=ask)
    sim.sim.set_fault("cut-3")
    list(client.chat.completions.create(model="gemini-2.5-flash", messages=ask, stream=True))
    sim.sim.set_fault("error-503")
    client.chat.completions.create(model="gemini-2.5-flash", messages=ask)
    gw.stop()

    from standby.store import open_bus

    async with open_bus(f"sqlite:///{db}") as bus:
        counts = await Materializer(bus, store).run(once=True)
    assert (counts.written, counts.skipped) == (1, {"stitched": 1, "fallback": 1})
    [pair] = store.pairs()
    assert pair.messages[-1]["content"] == primary.choices[0].message.content
    assert pair.prompt == "Capture this please." and pair.category == "gemini-2.5-flash"
