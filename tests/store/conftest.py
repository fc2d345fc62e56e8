"""Bus, state and registry fixtures: the same tests run on a SQLite file (tmp_path) and on the
real Redis at 127.0.0.1:6379, each Redis test under its own key prefix, deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from standby.store import (
    Bus,
    ChatMessage,
    InferenceCompleted,
    InferenceCompletedData,
    open_bus,
    open_state,
)
from standby.store.registry import Registry
from standby.store.state import StateStore

REDIS_URL = "redis://127.0.0.1:6379/0"
CLAIM_AFTER_S = 0.3


def inference_event(n: int, *, response: str = "an answer", **data: Any) -> InferenceCompleted:
    """A small, valid ``inference.completed`` event whose request id is ``r{n}``."""
    fields: dict[str, Any] = {
        "request_id": f"r{n}",
        "route": "gemini-2.5-flash",
        "backend": "gemini",
        "provenance": "primary",
        "model": "gemini-2.5-flash",
        "messages": [ChatMessage(role="user", content=f"question {n}")],
        "params": {"temperature": 0.2},
        "response": response,
        "finish_reason": "stop",
        "latency_s": 0.25,
        "ttft_s": 0.05,
        "key_id": "0123456789abcdef",
    }
    fields.update(data)
    return InferenceCompleted(source="tests", data=InferenceCompletedData(**fields))


def require_redis() -> None:
    """Redis must be up (CI starts it); a missing server fails loudly, never skips."""
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as e:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({e}); start it with: redis-server "
            '--daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no',
            pytrace=False,
        )


class Backend:
    """Opens buses on one storage (a SQLite file or a Redis key prefix) and cleans it up."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.prefix = f"standby-test:{uuid.uuid4().hex}:"
        self.path = tmp_path / "bus" / "events.db"
        self.buses: list[Bus] = []

    def url(self, **options: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        if self.kind == "sqlite":
            base = f"sqlite:///{self.path}"
        else:
            base = f"{REDIS_URL}?prefix={self.prefix}"
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}{query}" if query else base

    def open(self, *, claim_after_s: float = CLAIM_AFTER_S, **options: Any) -> Bus:
        bus = open_bus(self.url(**options), claim_after_s=claim_after_s)
        self.buses.append(bus)
        return bus

    async def cleanup(self) -> None:
        for bus in self.buses:
            await bus.close()
        if self.kind == "redis":
            client = redis.asyncio.Redis.from_url(REDIS_URL)
            try:
                keys = [k async for k in client.scan_iter(match=f"{self.prefix}*", count=1000)]
                if keys:
                    await client.delete(*keys)
            finally:
                await client.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "redis":
        require_redis()
    b = Backend(request.param, tmp_path)
    yield b
    await b.cleanup()


@pytest.fixture
def bus(backend: Backend) -> Bus:
    return backend.open()


@pytest.fixture
async def raw_redis() -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client of the test Redis, to look at and tamper with what the bus stored."""
    require_redis()
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    require_redis()
    b = Backend("redis", tmp_path)
    yield b
    await b.cleanup()


@pytest.fixture
async def state(backend: Backend) -> AsyncIterator[StateStore]:
    store = open_state(backend.url())
    yield store
    await store.close()


@pytest.fixture
def registry(state: StateStore) -> Registry:
    return Registry(state)
