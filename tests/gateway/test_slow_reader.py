"""A client that stops reading its answer is dropped once it has taken nothing for
``server.send_timeout_s`` (standby/gateway/http_protocol.py): its connection is reset, its
stream ends as an error, its concurrency slot and buffers are freed, the backend is not blamed
and nothing incomplete is captured. Whole answers too (their slot is given back before the body
goes out; what they held is the body in memory). Real gateway and simulated Gemini on
127.0.0.1; the stalled clients are raw sockets with a 4 KiB receive buffer that never read."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.fixtures.captured import stored
from tests.fixtures.drill_report import Record
from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

STALLED = 3  # stalled clients, and the gateway's max_concurrency
SEND_TIMEOUT_S = 1.0
# 8 MiB of text: more than the loopback's socket buffers (the kernel's send buffer grows to
# net.ipv4.tcp_wmem's maximum, 4 MiB by default), so the gateway has bytes left to send.
ANSWER = "lorem " * ((8 << 20) // 6)
BOUND = 1 << 20  # what the process may keep, all stalled clients together, once they are gone


def config(url: str, db: Path) -> dict[str, Any]:
    cfg = base_config(url, None)
    cfg["server"].update(max_concurrency=STALLED, send_timeout_s=SEND_TIMEOUT_S)
    # Backend limits far beyond the test: only the send timeout can end a stalled stream.
    cfg["backends"]["gemini"]["timeouts"] = {
        "connect_s": 2,
        "first_token_s": 30,
        "idle_s": 30,
        "total_s": 60,
    }
    cfg["capture"] = {"enabled": True, "bus": f"sqlite:///{db}", "flush_interval_s": 0.05}
    return cfg


def request(stream: bool, content: str = "Say a lot.") -> dict[str, Any]:
    messages = [{"role": "user", "content": content}]
    return {"model": ROUTE, "messages": messages, "stream": stream}


def stall(gw: GatewayServer, body: dict[str, Any]) -> socket.socket:
    """A connection that sends ``body`` and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((gw.host, gw.port))
    payload = orjson.dumps(body)
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\n"
        b"content-type: application/json\r\nx-standby-capture: on\r\n"
        b"content-length: %d\r\n\r\n" % len(payload)
    )
    sock.sendall(head + payload)
    return sock


def ending(sock: socket.socket) -> tuple[int, str]:
    """Read what is left; how the connection ended: ``reset``, ``closed`` or ``open``."""
    sock.settimeout(3)
    got = 0
    try:
        while part := sock.recv(1 << 16):
            got += len(part)
        return got, "closed"
    except ConnectionResetError:
        return got, "reset"
    except TimeoutError:
        return got, "open"
    finally:
        sock.close()


async def read_whole(gw: GatewayServer, stream: bool, capture: bool = True) -> bytes:
    headers = {} if capture else {"x-standby-capture": "off"}
    async with httpx.AsyncClient(base_url=gw.url, timeout=60) as client:
        r = await client.post("/v1/chat/completions", json=request(stream), headers=headers)
    assert r.status_code == 200
    return r.content


async def wait_until(condition: Any, within_s: float) -> float:
    """Seconds until ``condition()`` held; AssertionError after ``within_s``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within_s, "condition not reached in time"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def sample(gw: GatewayServer, name: str, **labels: str) -> float:
    assert gw.gateway is not None
    return gw.gateway.metrics.registry.get_sample_value(name, labels) or 0.0


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def test_stalled_streams_are_dropped_and_their_slots_freed(
    sim: RunningSim, start_gateway: StartGateway, tmp_path: Path, drill_report: Record
) -> None:
    db = tmp_path / "events.db"
    gw = start_gateway(config(sim.url, db))
    assert gw.gateway is not None
    admission = gw.gateway.admission
    sim.sim.script([ANSWER] * (STALLED + 1))
    full = await read_whole(gw, stream=True, capture=False)  # warm: the simulator's caches
    assert full.endswith(b"data: [DONE]\n\n")
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        # and the test's schema check of error bodies (loaded on the first one)
        missing = await client.post("/v1/chat/completions", json={**request(True), "model": "?"})
    assert missing.status_code == 404

    tracemalloc.start()
    try:
        before = traced()
        sockets = [stall(gw, request(stream=True)) for _ in range(STALLED)]
        await wait_until(lambda: admission.total == STALLED, 30)
        stalled_at = time.monotonic()
        # Every slot is held: the next request is refused.
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            refused = await client.post("/v1/chat/completions", json=request(stream=True))
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "overloaded"

        await wait_until(lambda: admission.total == 0, SEND_TIMEOUT_S + 15)
        held_s = time.monotonic() - stalled_at
        endings = [ending(s) for s in sockets]
        kept = traced() - before
    finally:
        tracemalloc.stop()

    # Dropped by the send timeout, long before the backend's total_s (60 s) could end it.
    assert held_s < SEND_TIMEOUT_S + 15
    assert all(end == "reset" and got < len(full) for got, end in endings), endings
    assert kept < BOUND, kept
    assert sample(gw, "standby_in_flight_requests", route=ROUTE) == 0
    errors = sample(gw, "standby_requests_total", route=ROUTE, backend="gemini", outcome="error")
    assert errors == STALLED  # each counted once, as an error of the request
    assert sample(gw, "standby_upstream_errors_total", backend="gemini", reason="timeout") == 0
    assert gw.breaker("gemini") == "CLOSED"  # the client's stall is not the backend's failure

    # The slots serve again, and only the complete answer is captured.
    sim.sim.script(["A short answer."])
    assert (await read_whole(gw, stream=True)).endswith(b"data: [DONE]\n\n")
    gw.stop()
    events = await stored(db)
    assert [e.data.response for e in events] == ["A short answer."]

    drill_report(
        drill="clients that stop reading their stream",
        tried=f"{STALLED} raw sockets (4 KiB receive buffer) never reading an 8 MiB stream, "
        f"max_concurrency {STALLED}, send_timeout_s {SEND_TIMEOUT_S:g}, total_s 60",
        requests=STALLED,
        errors=STALLED,
        p99_ms="",
        slots_held_s=round(held_s, 2),
        traced_kib_kept=kept // 1024,
    )


async def test_stalled_whole_answers_are_dropped_and_their_memory_freed(
    sim: RunningSim, start_gateway: StartGateway, tmp_path: Path, drill_report: Record
) -> None:
    gw = start_gateway(config(sim.url, tmp_path / "events.db"))
    assert gw.gateway is not None
    sim.sim.script([ANSWER] * (STALLED + 1))
    full = await read_whole(gw, stream=False, capture=False)  # warm, as above

    tracemalloc.start()
    try:
        before = traced()
        sockets = [stall(gw, request(stream=False)) for _ in range(STALLED)]
        started = time.monotonic()
        # A whole answer gives its slot back before its body goes out.
        await wait_until(lambda: sim.sim.requests == STALLED + 1, 30)
        await wait_until(lambda: gw.gateway is not None and gw.gateway.admission.total == 0, 30)
        # What the gateway holds for them is the unsent bodies, until they are dropped.
        await asyncio.sleep(SEND_TIMEOUT_S * 3)
        endings = [ending(s) for s in sockets]
        elapsed = time.monotonic() - started
        kept = traced() - before
    finally:
        tracemalloc.stop()

    assert all(end == "reset" and got < len(full) for got, end in endings), endings
    assert kept < BOUND, kept
    drill_report(
        drill="clients that stop reading a whole answer",
        tried=f"{STALLED} raw sockets (4 KiB receive buffer) never reading an 8 MiB answer, "
        f"send_timeout_s {SEND_TIMEOUT_S:g}",
        requests=STALLED,
        errors=0,
        p99_ms="",
        seconds=round(elapsed, 2),
        traced_kib_kept=kept // 1024,
    )
