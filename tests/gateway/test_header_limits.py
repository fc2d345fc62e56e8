"""Limits on the request head (``server.max_header_bytes``, ``max_headers``,
``header_timeout_s``), enforced before the application (so before the key check), against a
real gateway on 127.0.0.1 over raw sockets; and ``/metrics`` under a flood of scrapes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from standby.gateway.metrics import REFUSED_HEAD_REASONS
from standby.gateway.metrics_page import BURST, RENDERS_PER_S
from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

HELLO = [{"role": "user", "content": "Hello!"}]


def head(host: str, *lines: str, path: str = "/healthz") -> bytes:
    """A GET request head with ``lines`` as its headers (no blank line: the head is open)."""
    return (
        f"GET {path} HTTP/1.1\r\nhost: {host}\r\n".encode()
        + "".join(f"{line}\r\n" for line in lines).encode()
    )


def connect(gw: GatewayServer) -> socket.socket:
    sock = socket.create_connection((gw.host, gw.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection (a test failure if it does
    not within ``timeout``). A reset ends it too: the server closed with bytes of ours unread,
    or we wrote after its close; what it sent before is read first."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one HTTP/1.1 response."""
    head_part, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def read_one_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length, the connection left open."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    status, headers, body = response(data)
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return status, headers, body


def assert_refused(data: bytes, status: int, code: str) -> None:
    got, headers, body = response(data)
    assert got == status, data[:300]
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"


def refused_heads(gw: GatewayServer) -> dict[str, float]:
    """``standby_refused_request_heads_total`` by reason, from ``/metrics`` (a fresh page: a
    test scrapes it once, well within the page's burst)."""
    text = httpx.get(f"{gw.url}/metrics").text
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "standby_refused_request_heads"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def counted(**reasons: int) -> dict[str, float]:
    """Every reason at zero but those given."""
    return {reason: float(reasons.get(reason, 0)) for reason in REFUSED_HEAD_REASONS}


def config_for(sim: RunningSim) -> dict[str, Any]:
    """The simulated Gemini as the only backend, with time for the process's first request
    (0.6 to 1.2 s on a loaded 2-core machine, near the fixtures' 1.5 s first-token limit)."""
    config = base_config(sim.url, None)
    config["backends"]["gemini"]["timeouts"] = {
        "connect_s": 2,
        "first_token_s": 10,
        "idle_s": 10,
        "total_s": 10,
    }
    return config


@pytest.fixture
def gateway(sim: RunningSim, start_gateway: StartGateway) -> GatewayServer:
    """A keyed gateway with small limits: 8 KiB of head, 20 header lines, 1 s to send them."""
    config = config_for(sim)
    config["server"].update(
        api_keys=["header-test-key"], max_header_bytes=8192, max_headers=20, header_timeout_s=1
    )
    return start_gateway(config)


def test_the_sdk_is_served_within_the_limits(gateway: GatewayServer) -> None:
    """The limits leave normal clients alone: the openai SDK (17 headers, ~600 bytes), plain
    and streamed, several requests on one kept-alive connection."""
    client = gateway.client(api_key="header-test-key")
    for _ in range(3):
        answer = client.chat.completions.create(model=ROUTE, messages=HELLO)  # type: ignore[arg-type]
        assert answer.choices[0].message.content
    chunks = list(client.chat.completions.create(model=ROUTE, messages=HELLO, stream=True))  # type: ignore[arg-type]
    assert any(c.choices and c.choices[0].delta.content for c in chunks)


def test_head_at_the_limits_is_served(gateway: GatewayServer) -> None:
    """Exactly 20 header lines in just under 8 KiB: answered (the limits are where they say)."""
    host = f"{gateway.host}:{gateway.port}"
    lines = [f"x-pad-{i}: {'a' * 300}" for i in range(19)]  # + host = 20 lines
    request = head(host, *lines) + b"\r\n"
    assert len(request) < 8192
    with connect(gateway) as sock:
        sock.sendall(request)
        status, _, body = read_one_response(sock)
    assert status == 200, body


def test_oversized_head_is_refused_with_431_and_closed(gateway: GatewayServer) -> None:
    """Header lines past 8 KiB and never the blank line: 431 and the connection closed, without
    waiting for the end of the head (and without a key: the check comes first)."""
    host = f"{gateway.host}:{gateway.port}"
    with connect(gateway) as sock:
        sock.sendall(head(host, *[f"x-pad-{i}: {'b' * 1000}" for i in range(9)]))
        t0 = time.monotonic()
        data = read_until_closed(sock)
    assert time.monotonic() - t0 < 0.9  # at once, not at the header timeout
    assert_refused(data, 431, "headers_too_large")
    # One header line longer than the limit, alone: the same.
    with connect(gateway) as sock:
        sock.sendall(head(host, f"x-long: {'c' * 9000}"))
        assert_refused(read_until_closed(sock), 431, "headers_too_large")
    assert refused_heads(gateway) == counted(headers_too_large=2)


def test_too_many_headers_are_refused_with_431(gateway: GatewayServer) -> None:
    """21 header lines (small ones): 431 whether the head is complete (the request never
    reaches the application: no 401 for the missing key) or still open."""
    host = f"{gateway.host}:{gateway.port}"
    lines = [f"x-h{i}: 1" for i in range(20)]  # + host = 21
    complete = head(host, *lines, path="/v1/chat/completions").replace(b"GET", b"POST", 1)
    with connect(gateway) as sock:
        sock.sendall(complete + b"content-length: 2\r\n\r\n{}")
        assert_refused(read_until_closed(sock), 431, "too_many_headers")
    with connect(gateway) as sock:
        sock.sendall(head(host, *[f"x-h{i}: 1" for i in range(40)]))
        assert_refused(read_until_closed(sock), 431, "too_many_headers")
    assert refused_heads(gateway) == counted(too_many_headers=2)


def test_a_request_after_a_refusal_is_served(gateway: GatewayServer) -> None:
    host = f"{gateway.host}:{gateway.port}"
    with connect(gateway) as sock:
        sock.sendall(head(host, f"x-long: {'c' * 9000}"))
        read_until_closed(sock)
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


def vm_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.timeout(120)
def test_a_flood_of_header_lines_leaves_memory_flat(
    sim: RunningSim, start_gateway: StartGateway
) -> None:
    """Four connections each sending up to 64 MiB of header lines and never the blank line
    (the gateway runs in this process: its RSS is ours). With the default 64 KiB limit each is
    refused after its first reads; without a limit the gateway keeps every line."""
    gw = start_gateway(config_for(sim))
    host = f"{gw.host}:{gw.port}"
    block = "".join(f"x-flood-{i}: {'f' * 1000}\r\n" for i in range(1024)).encode()  # ~1 MiB
    sent = [0] * 4
    socks = [connect(gw) for _ in range(4)]
    rss_before = vm_rss_mib()

    def flood(i: int) -> None:
        sock = socks[i]
        with contextlib.suppress(OSError):  # reset or broken pipe: the gateway closed it
            sock.sendall(head(host))
            while sent[i] < 64 << 20:
                sock.sendall(block)
                sent[i] += len(block)

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    growth = vm_rss_mib() - rss_before  # the connections are still open on our side
    for sock in socks:
        sock.close()
    assert all(n < 4 << 20 for n in sent), sent  # each refused within its first MiBs
    assert growth < 32, f"RSS grew by {growth:.0f} MiB; sent {sent}"
    assert httpx.get(f"{gw.url}/healthz").status_code == 200


async def _slow_head(
    host: str, port: int, request_head: bytes, every_s: float
) -> tuple[float, bytes]:
    """Send ``request_head`` a byte every ``every_s`` until the server closes the connection:
    (seconds until then, what it sent)."""
    reader, writer = await asyncio.open_connection(host, port)
    t0 = time.monotonic()
    received = b""

    async def read_all() -> None:
        nonlocal received
        with contextlib.suppress(ConnectionResetError):  # as in read_until_closed
            while chunk := await reader.read(65536):
                received += chunk

    reading = asyncio.create_task(read_all())
    try:
        with contextlib.suppress(OSError):
            for i in range(len(request_head)):
                if reading.done():
                    break
                writer.write(request_head[i : i + 1])
                await asyncio.sleep(every_s)
        await asyncio.wait_for(reading, 10)
        return time.monotonic() - t0, received
    finally:
        writer.close()


async def test_slow_headers_are_cut_at_the_header_timeout(gateway: GatewayServer) -> None:
    """50 connections sending a header byte every 0.1 s (the whole head would take ~50 s), and
    one sending nothing: every one is closed about 1 s (header_timeout_s) after it opened;
    those that sent part of a head get 408. A normal request meanwhile is answered at once."""
    host = f"{gateway.host}:{gateway.port}"
    slow = head(host, *[f"x-slow-{i}: {'s' * 20}" for i in range(15)]) + b"\r\n"
    assert len(slow) * 0.1 > 40
    t0 = time.monotonic()
    loris = [
        asyncio.create_task(_slow_head(gateway.host, gateway.port, slow, 0.1)) for _ in range(50)
    ]
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)  # sends nothing
    await asyncio.sleep(0.3)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        r = await http.get("/healthz")
    assert r.status_code == 200
    assert not any(t.done() for t in loris)  # answered while the slow ones were still open
    results = await asyncio.gather(*loris)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing said
    idle_closed_after = time.monotonic() - t0
    writer.close()
    for elapsed, received in results:
        assert 0.9 <= elapsed < 3.0, elapsed
        assert_refused(received, 408, "header_timeout")
    assert idle_closed_after < 3.5
    assert refused_heads(gateway) == counted(header_timeout=50, no_head=1)


def test_the_next_request_on_a_kept_alive_connection_is_timed_too(
    gateway: GatewayServer,
) -> None:
    """After a response the connection stays open (keep-alive); the next request's head gets
    its own header_timeout_s from that response's end: a full request is answered, a stalled
    one gets 408 and the connection closed after ~1 s."""
    host = f"{gateway.host}:{gateway.port}"
    with connect(gateway) as sock:
        for _ in range(2):
            sock.sendall(head(host) + b"\r\n")
            status, headers, _ = read_one_response(sock)
            assert status == 200
            assert headers.get("connection") != "close"
        time.sleep(0.5)  # idle, under the 1 s header timeout and uvicorn's 5 s keep-alive
        sock.sendall(head(host) + b"\r\n")
        assert read_one_response(sock)[0] == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: ")
        t0 = time.monotonic()
        for _ in range(5):
            time.sleep(0.1)
            with contextlib.suppress(OSError):
                sock.sendall(b"x")
        data = read_until_closed(sock)
        elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed < 3.0, elapsed
    assert_refused(data, 408, "header_timeout")


def test_a_long_answer_is_not_cut_by_the_header_timeout(
    sim: RunningSim, start_gateway: StartGateway
) -> None:
    """The timer only runs while a head is awaited: an answer that takes 3x header_timeout_s
    is delivered on its connection, and the connection serves the next request."""
    config = config_for(sim)
    config["server"]["header_timeout_s"] = 0.5
    gw = start_gateway(config)
    sim.sim.set_fault("slow-1500")
    client = gw.client()
    answer = client.chat.completions.create(model=ROUTE, messages=HELLO)  # type: ignore[arg-type]
    assert answer.choices[0].message.content
    sim.sim.set_fault("ok")
    again = client.chat.completions.create(model=ROUTE, messages=HELLO)  # type: ignore[arg-type]
    assert again.choices[0].message.content


def answered(page: str) -> float:
    """``standby_requests_total`` of the route's answers from gemini, read off a page."""
    series = f'standby_requests_total{{backend="gemini",outcome="ok",route="{ROUTE}"}} '
    (line,) = [line for line in page.splitlines() if line.startswith(series)]
    return float(line.removeprefix(series))


def test_metrics_under_a_flood_renders_a_few_times_a_second(
    sim: RunningSim, start_gateway: StartGateway
) -> None:
    """500 scrapes back to back render the page at most 10 (the burst) + 5 a second times; a
    scrape just after a request shows it, and one 1 / RENDERS_PER_S later during a flood."""
    gw = start_gateway(config_for(sim))
    assert gw.gateway is not None
    page = gw.gateway.metrics_page
    client = gw.client()
    with httpx.Client(base_url=gw.url) as http:
        assert answered(http.get("/metrics").text) == 0
        client.chat.completions.create(model=ROUTE, messages=HELLO)  # type: ignore[arg-type]
        assert answered(http.get("/metrics").text) == 1  # fresh, not the page of a moment ago
        before = page.renders
        t0 = time.monotonic()
        for _ in range(500):
            r = http.get("/metrics")
            assert r.status_code == 200
            assert answered(r.text) == 1
        elapsed = time.monotonic() - t0
        renders = page.renders - before
        assert renders <= BURST + RENDERS_PER_S * elapsed + 1, (renders, elapsed)
        client.chat.completions.create(model=ROUTE, messages=HELLO)  # type: ignore[arg-type]
        time.sleep(1 / RENDERS_PER_S)  # the bucket is empty: one render is due by now
        assert answered(http.get("/metrics").text) == 2
