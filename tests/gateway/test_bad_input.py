"""Bad input against a real gateway on the simulated Gemini: wrong types, huge and deeply nested
JSON, invalid UTF-8, empty and 10,000-message conversations, out-of-range numbers, unknown roles,
header injection and slow bodies. Never a 500, never a traceback, every error in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import httpx
import orjson
import pytest

from standby.config import ServerConfig
from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

CHAT = "/v1/chat/completions"
USER = {"role": "user", "content": "hi"}
BODY_TIMEOUT_S = 1.0


@pytest.fixture
def gateway(sim: RunningSim, start_gateway: StartGateway) -> GatewayServer:
    config = base_config(sim.url, None)
    config["server"]["body_timeout_s"] = BODY_TIMEOUT_S
    return start_gateway(config)


def openai_error(r: httpx.Response) -> dict[str, object]:
    """The response is an OpenAI error body (and nothing that looks like a traceback)."""
    assert r.status_code < 500 or r.status_code == 503, (r.status_code, r.text[:300])
    assert "Traceback" not in r.text and 'File "' not in r.text
    assert r.headers["content-type"].startswith("application/json"), r.text[:200]
    error = r.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert set(error) >= {"message", "type", "param", "code"}
    return error  # type: ignore[no-any-return]


def nested(depth: int) -> bytes:
    return b'{"model":"%s","messages":[{"role":"user","content":%s"x"%s}]}' % (
        ROUTE.encode(),
        b"[" * depth,
        b"]" * depth,
    )


BAD_BODIES: dict[str, bytes] = {
    "empty": b"",
    "not json": b"hello",
    "truncated": b'{"model": "' + ROUTE.encode(),
    "top-level list": b"[]",
    "top-level string": b'"x"',
    "top-level null": b"null",
    "top-level number": b"1e999",
    "model wrong type": orjson.dumps({"model": 5, "messages": [USER]}),
    "model missing": orjson.dumps({"messages": [USER]}),
    "model empty": orjson.dumps({"model": "", "messages": [USER]}),
    "model huge": orjson.dumps({"model": "m" * 100_000, "messages": [USER]}),
    "messages wrong type": orjson.dumps({"model": ROUTE, "messages": "hi"}),
    "messages empty": orjson.dumps({"model": ROUTE, "messages": []}),
    "message not object": orjson.dumps({"model": ROUTE, "messages": [1, 2]}),
    "content wrong type": orjson.dumps(
        {"model": ROUTE, "messages": [{"role": "user", "content": 5}]}
    ),
    "content bad part": orjson.dumps(
        {
            "model": ROUTE,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x"}}],
                }
            ],
        }
    ),
    "unknown role": orjson.dumps(
        {"model": ROUTE, "messages": [{"role": "wizard", "content": "x"}]}
    ),
    "role missing": orjson.dumps({"model": ROUTE, "messages": [{"content": "x"}]}),
    "negative temperature": orjson.dumps({"model": ROUTE, "messages": [USER], "temperature": -1}),
    "NaN temperature": b'{"model":"%s","messages":[{"role":"user","content":"x"}],'
    b'"temperature":NaN}' % ROUTE.encode(),
    "Infinity top_p": b'{"model":"%s","messages":[{"role":"user","content":"x"}],'
    b'"top_p":Infinity}' % ROUTE.encode(),
    "huge temperature": b'{"model":"%s","messages":[{"role":"user","content":"x"}],'
    b'"temperature":1e400}' % ROUTE.encode(),
    "negative max_tokens": orjson.dumps({"model": ROUTE, "messages": [USER], "max_tokens": -5}),
    "huge max_tokens": b'{"model":"%s","messages":[{"role":"user","content":"x"}],'
    b'"max_tokens":%s}' % (ROUTE.encode(), b"9" * 5000),
    "max_tokens over 32 bits": orjson.dumps(
        {"model": ROUTE, "messages": [USER], "max_tokens": 2**31}
    ),
    "seed over 64 bits": b'{"model":"%s","messages":[{"role":"user","content":"x"}],'
    b'"seed":%d}' % (ROUTE.encode(), 2**64),
    "schema number over 64 bits": b'{"model":"%s","messages":[{"role":"user","content":"x"}],'
    b'"response_format":{"type":"json_schema","json_schema":'
    b'{"name":"n","schema":{"type":"integer","maximum":%d}}}}' % (ROUTE.encode(), 2**64),
    "n = 9": orjson.dumps({"model": ROUTE, "messages": [USER], "n": 9}),
    "stream wrong type": orjson.dumps({"model": ROUTE, "messages": [USER], "stream": [1]}),
    "stop too many": orjson.dumps({"model": ROUTE, "messages": [USER], "stop": list("abcde")}),
    "bad response_format": orjson.dumps(
        {"model": ROUTE, "messages": [USER], "response_format": {"type": "xml"}}
    ),
    "unknown model": orjson.dumps({"model": "no-such-model", "messages": [USER]}),
    "invalid UTF-8": b'{"model":"%s","messages":[{"role":"user","content":"\xff\xfe\x80"}]}'
    % ROUTE.encode(),
    "lone surrogate": b'{"model":"%s","messages":[{"role":"user","content":"\\ud800"}]}'
    % ROUTE.encode(),
    "NUL byte": b'{"model":"%s","messages":[{"role":"user","content":"a\x00b"}]}' % ROUTE.encode(),
    "deeply nested 100k": nested(100_000),
    "deeply nested 300": nested(300),
    "duplicate keys": b'{"model":"x","model":"%s","messages":[]}' % ROUTE.encode(),
    "over max_body_bytes": orjson.dumps(
        {"model": ROUTE, "messages": [USER], "pad": "x" * ServerConfig().max_body_bytes}
    ),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
async def test_bad_body_is_an_openai_error(gateway: GatewayServer, name: str) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        r = await client.post(
            CHAT, content=BAD_BODIES[name], headers={"content-type": "application/json"}
        )
    openai_error(r)
    assert 400 <= r.status_code < 500
    if name == "over max_body_bytes":
        assert r.status_code == 413
    if name == "unknown model":
        assert r.status_code == 404


async def test_odd_but_valid_requests_are_answered(gateway: GatewayServer) -> None:
    """Not errors: many messages, unicode, unknown fields, a NUL in text, odd content types."""
    many = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(10_001)
    ]
    cases = [
        {"model": ROUTE, "messages": many},
        {"model": ROUTE, "messages": [{"role": "user", "content": "😀 ünïcödé \u202e"}]},
        {"model": ROUTE, "messages": [USER], "some_new_field": {"a": [1, 2]}},
        {
            "model": ROUTE,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "parts"}]}],
        },
        {"model": ROUTE, "messages": [USER], "temperature": 0, "top_p": 1, "max_tokens": 1},
    ]
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        for body in cases:
            r = await client.post(CHAT, json=body)
            assert r.status_code == 200, r.text[:300]
            assert r.json()["choices"][0]["message"]["role"] == "assistant"
        r = await client.post(CHAT, content=b"{}", headers={"content-type": "text/plain"})
        openai_error(r)  # parsed as JSON regardless of the declared type: 400, not 415/500


@pytest.mark.parametrize(
    "value",
    ["a" * 10_000, "ab c", "<script>", "é", "../../etc/passwd", "%0d%0aSet-Cookie:x=1"],
)
async def test_unsafe_request_ids_are_replaced(gateway: GatewayServer, value: str) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        r = await client.post(
            CHAT,
            json={"model": ROUTE, "messages": [USER]},
            headers={"x-request-id": value.encode("utf-8")},
        )
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    assert rid != value and len(rid) == 32 and rid.isalnum()


def raw_request(port: int, head: bytes, body: bytes = b"", read_s: float = 10) -> bytes:
    """Send bytes as they are (no client library cleans them up); the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_s) as s:
        s.sendall(head + body)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


@pytest.mark.parametrize(
    "header",
    [
        b"x-request-id: abc\r\nSet-Cookie: injected=1",  # a second header, as the sender meant
        b"x-request-id: abc\rSet-Cookie: injected=1",  # bare CR inside a value
        b"x-request-id: abc\nSet-Cookie: injected=1",  # bare LF
        b"x-request-id: abc\x00def",
        b"x-standby-capture: off\r\n\r\nGET / HTTP/1.1",  # request smuggling attempt
    ],
)
def test_header_injection_is_refused_or_neutral(gateway: GatewayServer, header: bytes) -> None:
    body = orjson.dumps({"model": ROUTE, "messages": [USER]})
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + header
        + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    answer = raw_request(gateway.port, head, body)
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, _ = rest.partition(b"\r\n\r\n")
    assert status_line.split(b" ")[1] in (b"200", b"400"), answer[:300]
    assert b"injected" not in headers.lower()
    assert b"set-cookie" not in headers.lower()
    assert b"Traceback" not in answer


def test_slow_body_is_cut_off(gateway: GatewayServer) -> None:
    """A client that declares a body and sends it a byte at a time gets a 408 once
    server.body_timeout_s has passed, and its connection back; other clients are served."""
    body = orjson.dumps({"model": ROUTE, "messages": [USER]})
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(head)
        t0 = time.monotonic()
        s.setblocking(False)
        answer = b""
        for byte in body:
            try:
                s.send(bytes([byte]))
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
            with contextlib.suppress(BlockingIOError):
                answer += s.recv(65536)
            if answer:
                break
            time.sleep(0.1)
        s.setblocking(True)
        while b"\r\n\r\n" not in answer or not _complete(answer):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        waited = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert BODY_TIMEOUT_S * 0.9 <= waited < BODY_TIMEOUT_S + 5
    _, _, payload = answer.partition(b"\r\n\r\n")
    assert orjson.loads(payload)["error"]["code"] == "body_timeout"
    r = httpx.post(f"{gateway.url}{CHAT}", json={"model": ROUTE, "messages": [USER]}, timeout=10)
    assert r.status_code == 200


async def test_many_slow_bodies_do_not_starve_others(gateway: GatewayServer) -> None:
    """Twenty slow-loris connections at once: a normal request is still answered quickly."""
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    writers = []
    for _ in range(20):
        _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(head)
        writers.append(writer)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            t0 = time.perf_counter()
            r = await client.post(CHAT, json={"model": ROUTE, "messages": [USER]})
            assert r.status_code == 200
            assert time.perf_counter() - t0 < BODY_TIMEOUT_S
    finally:
        for writer in writers:
            writer.close()
