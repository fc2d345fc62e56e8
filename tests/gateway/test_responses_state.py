"""Stored responses end to end: a real gateway on 127.0.0.1 in front of the simulated Gemini,
the official ``openai`` SDK and an OpenAI Agents SDK agent as clients, the store where the
operator's bus is (a SQLite file, or the real Redis at 127.0.0.1:6379).

``previous_response_id`` continues a conversation (the stored input and output, then the new
input; the instructions are not carried over) in whole and streamed requests and through a
Gemini 3 tool loop whose signed calls come back from the store; ``retrieve``, ``delete`` and
``input_items.list`` read them; a second gateway key gets 404 for the first one's responses
on every path; ``store: false`` keeps nothing; retention expires them; ``standby data purge``
deletes them.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, set_tracing_disabled

from standby.config import ResponsesConfig
from standby.gateway.auth import digest_of, key_id
from tests.data.test_cli import ok
from tests.e2e.conftest import GEMINI_3, gemini_backend
from tests.e2e.loop import AGENT_TOOLS, CALLED, QUESTION, RESULTS, TOOLS
from tests.fixtures.captured import stored
from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim
from tests.store.conftest import REDIS_URL, require_redis

set_tracing_disabled(True)

KEY_A, KEY_B = "key-a-for-responses", "key-b-for-responses"
PATIENT = {"connect_s": 5, "first_token_s": 20, "idle_s": 20, "total_s": 60}
FUNCTIONS = [{"type": "function", **tool["function"]} for tool in TOOLS]
WRITE_INTERVAL_S = ResponsesConfig().write_interval_s


class Store:
    """Where a test gateway keeps its responses: its bus URL, and what is there."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "events.db"
        self.prefix = f"standby-test:{uuid.uuid4().hex}:"
        self.url = (
            f"sqlite:///{self.path}" if kind == "sqlite" else f"{REDIS_URL}?prefix={self.prefix}"
        )

    def ids(self, count: int) -> list[str]:
        """The stored response ids, read from the storage itself, once ``count`` are there or
        10 s have passed (the gateway writes its answered responses every write_interval_s);
        for a count of 0, after ten of its write intervals."""
        if count == 0:
            time.sleep(10 * WRITE_INTERVAL_S)
        deadline = time.monotonic() + 10
        while len(ids := self.ids_now()) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return ids

    def ids_now(self) -> list[str]:
        """The stored response ids in the storage at this moment."""
        if self.kind == "sqlite":
            if not self.path.exists():
                return []
            with sqlite3.connect(self.path) as db:
                tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if ("standby_responses",) not in tables.fetchall():
                    return []
                return sorted(r[0] for r in db.execute("SELECT id FROM standby_responses"))
        with redis.Redis.from_url(REDIS_URL) as client:
            keys = client.scan_iter(match=f"{self.prefix}responses:r:*")
            return sorted(k.decode().rsplit(":", 1)[1] for k in keys)

    def cleanup(self) -> None:
        if self.kind == "redis":
            with redis.Redis.from_url(REDIS_URL) as client:
                keys = list(client.scan_iter(match=f"{self.prefix}*"))
                if keys:
                    client.delete(*keys)


def config(sim_url: str, store: Store, **responses: Any) -> dict[str, Any]:
    """Two gateway keys; the bus (capture off) is where responses are kept, as by default."""
    data = base_config(sim_url, None)
    data["backends"]["gemini"]["timeouts"] = PATIENT
    data["backends"]["gemini3"] = {**gemini_backend(f"{GEMINI_3}-tool-chain", sim_url)}
    data["backends"]["gemini3"]["timeouts"] = PATIENT
    data["routes"][GEMINI_3] = ["gemini3"]
    data["server"]["api_keys"] = [KEY_A, KEY_B]
    data["capture"] = {"enabled": False, "bus": store.url}
    data.pop("responses")  # the default: beside the bus
    if responses:
        data["responses"] = responses
    return data


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "redis":
        require_redis()
    s = Store(request.param, tmp_path)
    yield s
    s.cleanup()


@pytest.fixture
def gateway(sim: RunningSim, store: Store, start_gateway: StartGateway) -> GatewayServer:
    return start_gateway(config(sim.url, store))


def not_found(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The OpenAI error object of the 404 that ``call`` raises."""
    with pytest.raises(openai.NotFoundError) as caught:
        call(*args, **kwargs)
    error: dict[str, Any] = caught.value.body  # type: ignore[assignment]
    return error


def test_a_conversation_continues_by_previous_response_id(
    gateway: GatewayServer, store: Store
) -> None:
    client = gateway.client(api_key=KEY_A)
    first = client.responses.create(model=ROUTE, input="My name is Ada.", instructions="Brief.")
    assert first.store is True
    second = client.responses.create(
        model=ROUTE, input="What is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    assert second.instructions is None  # not carried over
    with client.responses.stream(
        model=ROUTE, input="And again?", previous_response_id=second.id
    ) as stream:
        third = stream.get_final_response()
    assert third.previous_response_id == second.id
    assert store.ids(3) == sorted([first.id, second.id, third.id])

    again = client.responses.retrieve(second.id)
    assert again.model_dump() == second.model_dump()
    items = client.responses.input_items.list(second.id)
    assert [i.model_dump()["content"][0]["text"] for i in items.data] == ["What is my name?"]

    client.responses.delete(first.id)
    assert not_found(client.responses.retrieve, first.id)["code"] == "response_not_found"
    # The chain does not need it any more: each stored response holds its conversation.
    fourth = client.responses.create(
        model=ROUTE, input="Still there?", previous_response_id=third.id
    )
    assert fourth.status == "completed"


def test_another_key_gets_404_for_a_response_on_every_path(
    gateway: GatewayServer, store: Store, sim: RunningSim
) -> None:
    a, b = gateway.client(api_key=KEY_A), gateway.client(api_key=KEY_B)
    mine = a.responses.create(model=ROUTE, input="A secret of key A.")
    asked = sim.sim.requests
    for call, args, kwargs in (
        (b.responses.retrieve, (mine.id,), {}),
        (b.responses.delete, (mine.id,), {}),
        (b.responses.input_items.list, (mine.id,), {}),
        (b.responses.create, (), {"model": ROUTE, "input": "Hi", "previous_response_id": mine.id}),
    ):
        error = not_found(call, *args, **kwargs)
        assert error["message"] == f"Response with id '{mine.id}' not found."
    assert sim.sim.requests == asked  # B's continuation reached no backend
    unknown = not_found(
        a.responses.create, model=ROUTE, input="Hi", previous_response_id="resp_nope"
    )
    assert unknown["param"] == "previous_response_id"
    assert a.responses.retrieve(mine.id).output_text == mine.output_text  # B deleted nothing
    assert store.ids(1) == [mine.id]


def test_store_false_keeps_nothing(gateway: GatewayServer, store: Store) -> None:
    client = gateway.client(api_key=KEY_A)
    whole = client.responses.create(model=ROUTE, input="Forget this.", store=False)
    with client.responses.stream(model=ROUTE, input="And this.", store=False) as stream:
        streamed = stream.get_final_response()
    assert whole.store is False and streamed.store is False
    assert store.ids(0) == []
    for rid in (whole.id, streamed.id):
        not_found(client.responses.retrieve, rid)


def test_a_gemini_3_tool_loop_continues_from_the_store(
    gateway: GatewayServer, store: Store
) -> None:
    """Each step sends only the function results and the previous response's id: the calls,
    with the thought signatures Gemini 3 needs back, come from the store."""
    client = gateway.client(api_key=KEY_A)
    called: list[str] = []
    previous: str | None = None
    pending: list[Any] = [{"role": "user", "content": QUESTION}]
    for step in range(5):
        stream = step % 2 == 1
        kwargs: dict[str, Any] = {"model": GEMINI_3, "input": pending, "tools": FUNCTIONS}
        if previous is not None:
            kwargs["previous_response_id"] = previous
        if stream:
            with client.responses.stream(**kwargs) as events:
                response = events.get_final_response()
        else:
            response = client.responses.create(**kwargs)
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            break
        called += [c.name for c in calls]
        previous = response.id
        pending = [
            {"type": "function_call_output", "call_id": c.call_id, "output": RESULTS[c.name]}
            for c in calls
        ]
    assert called == CALLED
    assert response.output_text.strip()
    assert len(store.ids(len(CALLED) + 1)) == len(CALLED) + 1


async def test_an_agents_sdk_agent_chains_by_previous_response_id(
    gateway: GatewayServer, store: Store
) -> None:
    sent: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> None:
        if request.url.path.endswith("/responses"):
            sent.append(json.loads(request.content))

    http = httpx.AsyncClient(event_hooks={"request": [record]}, timeout=60)
    async with openai.AsyncOpenAI(
        base_url=f"{gateway.url}/v1", api_key=KEY_A, max_retries=0, http_client=http
    ) as client:
        agent = Agent(
            name="weather",
            model=OpenAIResponsesModel(model=GEMINI_3, openai_client=client),
            tools=list(AGENT_TOOLS),
            model_settings=ModelSettings(temperature=0),
        )
        result = await Runner.run(agent, QUESTION, max_turns=5, auto_previous_response_id=True)
    calls = [i.raw_item.name for i in result.new_items if i.type == "tool_call_item"]  # type: ignore[union-attr]
    assert calls == CALLED
    assert isinstance(result.final_output, str) and result.final_output.strip()
    assert "previous_response_id" not in sent[0]
    for body in sent[1:]:  # later turns send the id and only the new tool results
        assert body["previous_response_id"]
        assert {item["type"] for item in body["input"]} == {"function_call_output"}


def test_an_answer_is_read_back_at_once_and_written_by_the_stop(
    sim: RunningSim, store: Store, start_gateway: StartGateway
) -> None:
    """Responses are answered before they are written (in batches, every write_interval_s):
    until then the gateway reads them from memory, so a client continues, retrieves and
    deletes a response it has just been given; stopping the gateway writes what is left."""
    gw = start_gateway(config(sim.url, store, write_interval_s=5))
    client = gw.client(api_key=KEY_A)
    first = client.responses.create(model=ROUTE, input="My name is Ada.")
    with client.responses.stream(
        model=ROUTE, input="What is my name?", previous_response_id=first.id
    ) as stream:
        second = stream.get_final_response()
    gone = client.responses.create(model=ROUTE, input="Forget me.")
    assert store.ids_now() == []  # none written yet: 5 s have not passed
    assert client.responses.retrieve(second.id).output_text == second.output_text
    assert not_found(gw.client(api_key=KEY_B).responses.retrieve, first.id)
    items = client.responses.input_items.list(second.id)
    assert [i.model_dump()["content"][0]["text"] for i in items.data] == ["What is my name?"]
    client.responses.delete(gone.id)  # written first, then deleted where it is written
    not_found(client.responses.retrieve, gone.id)
    third = client.responses.create(model=ROUTE, input="Bye.", previous_response_id=second.id)
    assert store.ids_now() == sorted([first.id, second.id])
    gw.stop()
    assert store.ids_now() == sorted([first.id, second.id, third.id])


def test_input_items_sent_without_a_status_are_listed_with_one(
    gateway: GatewayServer,
) -> None:
    """A request's function_call and function_call_output items may leave out ``status``;
    ``input_items`` lists them as OpenAI's ItemResource requires, with one (the gateway's
    ShapeCheck validates the page against OpenAI's schemas)."""
    client = gateway.client(api_key=KEY_A)
    response = client.responses.create(
        model=ROUTE,
        tools=FUNCTIONS,  # type: ignore[arg-type]
        input=[
            {"role": "user", "content": QUESTION},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny."},
        ],
    )
    items = client.responses.input_items.list(response.id, order="asc").data
    assert [(i.type, getattr(i, "status", None)) for i in items] == [
        ("message", None),
        ("function_call", "completed"),
        ("function_call_output", "completed"),
    ]


def test_a_stored_response_expires_after_retention_s(
    sim: RunningSim, store: Store, start_gateway: StartGateway
) -> None:
    gw = start_gateway(config(sim.url, store, retention_s=1))
    client = gw.client(api_key=KEY_A)
    response = client.responses.create(model=ROUTE, input="Short-lived.")
    assert client.responses.retrieve(response.id).id == response.id
    time.sleep(1.2)
    not_found(client.responses.retrieve, response.id)
    not_found(client.responses.create, model=ROUTE, input="Hi", previous_response_id=response.id)


def test_standby_data_purge_deletes_a_keys_stored_responses(
    gateway: GatewayServer, store: Store, tmp_path: Path
) -> None:
    a, b = gateway.client(api_key=KEY_A), gateway.client(api_key=KEY_B)
    ours = [a.responses.create(model=ROUTE, input=f"A {n}").id for n in range(2)]
    theirs = b.responses.create(model=ROUTE, input="B").id
    assert len(store.ids(3)) == 3  # written: the purge below reads the storage
    pairs = f"sqlite:///{tmp_path / 'pairs.db'}"
    key = key_id(digest_of(KEY_A, "test"))
    run = ok("data", "purge", "--key-id", key, "--bus", store.url, "--store", pairs, "--json")
    assert json.loads(run.stdout)["responses"] == 2
    assert store.ids(1) == [theirs]
    for rid in ours:
        not_found(a.responses.retrieve, rid)


def test_a_conversation_over_max_body_bytes_is_a_413(
    sim: RunningSim, tmp_path: Path, start_gateway: StartGateway
) -> None:
    store = Store("sqlite", tmp_path)
    data = config(sim.url, store)
    data["server"]["max_body_bytes"] = 4096
    client = start_gateway(data).client(api_key=KEY_A)
    first = client.responses.create(model=ROUTE, input="x " * 1200)
    with pytest.raises(openai.APIStatusError) as caught:
        client.responses.create(model=ROUTE, input="y " * 1200, previous_response_id=first.id)
    assert caught.value.status_code == 413
    assert "previous_response_id" in caught.value.message


async def test_the_continued_conversation_is_what_reaches_the_backend_and_capture(
    sim: RunningSim, tmp_path: Path, start_gateway: StartGateway
) -> None:
    """Captured once per request, as any answer: the continuation's event holds the stored
    turns and the new one, without the first request's instructions."""
    db = tmp_path / "events.db"
    data = base_config(sim.url, None)
    data["backends"]["gemini"]["timeouts"] = PATIENT
    data["capture"] = {"enabled": True, "bus": f"sqlite:///{db}", "flush_interval_s": 0.05}
    data.pop("responses")
    gw = start_gateway(data)
    client = gw.client()
    first = client.responses.create(model=ROUTE, input="My name is Ada.", instructions="Brief.")
    client.responses.create(model=ROUTE, input="What is my name?", previous_response_id=first.id)
    gw.stop()
    events = [e.data for e in await stored(db)]
    assert len(events) == 2
    turns = [(m.role, m.content) for m in events[1].messages]
    assert turns == [
        ("user", "My name is Ada."),
        ("assistant", first.output_text),
        ("user", "What is my name?"),
    ]
