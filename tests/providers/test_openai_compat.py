"""OpenAICompatProvider against real local servers: the simulated Gemini's OpenAI surface, a
small edge-case server defined here, and the real ``transformers serve`` on the tiny Gemma."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from standby.config import OpenAIBackend
from standby.errors import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from standby.protocol import ChatRequest, Completion, Delta, Message
from standby.providers.openai_compat import OpenAICompatProvider, request_body
from standby.sim.background import free_port
from standby.tool_calls import Tool
from tests.fixtures.providers import HELLO, Start, chat_server, collect, failure, joined
from tests.fixtures.sim import SIM_KEY, RunningSim


def backend(base_url: str, model: str, **kw: Any) -> OpenAIBackend:
    return OpenAIBackend(type="openai", base_url=base_url, model=model, **kw)


@pytest.fixture
def make(started: Start) -> Any:
    async def _make(base_url: str, model: str, **kw: Any) -> OpenAICompatProvider:
        return await started(OpenAICompatProvider("oa", backend(base_url, model, **kw)))

    return _make


def gemini_openai(sim: RunningSim) -> str:
    return f"{sim.url}/v1beta/openai"


# --- request mapping ---------------------------------------------------------------------


def test_request_body_maps_fields_and_merges_extra_body() -> None:
    req = ChatRequest(
        messages=(Message("system", "be brief"), Message("user", "hi")),
        temperature=0.2,
        top_p=0.9,
        max_tokens=7,
        stop=("END",),
        seed=3,
        response_format={"type": "json_object"},
    )
    extra = {"top_k": 5, "temperature": 1.5, "model": "ignored"}
    body = request_body("served-name", req, extra, stream=False)
    assert body == {
        "top_k": 5,
        "model": "served-name",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 7,
        "seed": 3,
        "response_format": {"type": "json_object"},
        "stop": ["END"],
    }


def test_request_body_stream_asks_for_usage_and_omits_unset_fields() -> None:
    body = request_body("m", HELLO, {}, stream=True)
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_request_body_continue_final_sends_partial_answer_last() -> None:
    body = request_body("m", HELLO.continued("Hello, wor"), {}, stream=False)
    assert body["messages"][-1] == {"role": "assistant", "content": "Hello, wor"}
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False


# --- the simulated Gemini's OpenAI surface --------------------------------------------------


async def test_complete_ok_with_usage(sim: RunningSim, make: Any) -> None:
    p = await make(gemini_openai(sim), "gemini-2.5-flash")
    assert p.ready()
    c = await p.complete(HELLO)
    assert c.text.startswith("Simulated Gemini answer to: Say hello.")
    assert c.finish_reason == "stop"
    assert c.usage.prompt_tokens == 2
    assert c.usage.completion_tokens > 10
    assert c.model_version == "gemini-2.5-flash"


async def test_stream_matches_complete_and_ends_with_usage(sim: RunningSim, make: Any) -> None:
    p = await make(gemini_openai(sim), "gemini-2.5-flash")
    whole = await p.complete(HELLO)
    deltas = await collect(p)
    assert len(deltas) >= 2  # events that arrive in one read are forwarded as one delta
    assert joined(deltas) == whole.text
    assert all(d.finish_reason is None for d in deltas[:-1])
    last = deltas[-1]
    assert last.finish_reason == "stop"
    assert last.usage == whole.usage
    assert last.model_version == whole.model_version == "gemini-2.5-flash"


async def test_max_tokens_gives_length(sim: RunningSim, make: Any) -> None:
    p = await make(gemini_openai(sim), "gemini-2.5-flash")
    req = ChatRequest(messages=HELLO.messages, max_tokens=3)
    c = await p.complete(req)
    assert c.finish_reason == "length"
    assert (await collect(p, req))[-1].finish_reason == "length"


async def test_continue_final_continues_the_partial_answer(sim: RunningSim, make: Any) -> None:
    p = await make(gemini_openai(sim), "gemini-2.5-flash")
    c = await p.complete(HELLO.continued("Simulated Gemini"))
    assert c.finish_reason == "stop"
    assert c.text
    assert not c.text.startswith("Simulated Gemini")


async def test_bearer_key_is_sent(sim_with_key: RunningSim, make: Any) -> None:
    good = await make(gemini_openai(sim_with_key), "gemini-2.5-flash", api_key=SIM_KEY)
    assert (await good.complete(HELLO)).text
    wrong = await make(gemini_openai(sim_with_key), "gemini-2.5-flash", api_key="nope")
    with pytest.raises(UpstreamStatusError) as err:
        await wrong.complete(HELLO)
    assert err.value.status == 403
    assert err.value.reason == "auth"
    assert err.value.failover


@pytest.mark.parametrize("stream", [False, True])
async def test_429_carries_retry_after(sim: RunningSim, make: Any, stream: bool) -> None:
    p = await make(gemini_openai(sim), "error-429-retry-7")
    err = await failure(UpstreamStatusError, p, stream=stream)
    assert err.status == 429
    assert err.retry_after == 7
    assert err.reason == "rate_limited"
    assert err.failover and err.counts


@pytest.mark.parametrize("stream", [False, True])
async def test_503_fails_over(sim: RunningSim, make: Any, stream: bool) -> None:
    p = await make(gemini_openai(sim), "error-503")
    err = await failure(UpstreamStatusError, p, stream=stream)
    assert err.status == 503
    assert err.failover and err.reason == "server_error"


@pytest.mark.parametrize("stream", [False, True])
async def test_400_is_the_clients_error(sim: RunningSim, make: Any, stream: bool) -> None:
    p = await make(gemini_openai(sim), "error-400")
    err = await failure(UpstreamStatusError, p, stream=stream)
    assert err.status == 400
    assert not err.failover
    assert not err.counts


@pytest.mark.parametrize("stream", [False, True])
async def test_connection_refused(make: Any, stream: bool, refused_port: int) -> None:
    p = await make(f"http://127.0.0.1:{refused_port}/v1", "m")
    await failure(UpstreamConnectError, p, stream=stream)


async def test_cut_stream_is_an_error_not_success(sim: RunningSim, make: Any) -> None:
    p = await make(gemini_openai(sim), "cut-3")
    got: list[Delta] = []
    with pytest.raises(UpstreamConnectError):
        async for d in p.stream(HELLO):
            got.append(d)
    assert got, "some text arrived before the cut"
    assert all(d.finish_reason is None for d in got)


async def test_cut_whole_answer(sim: RunningSim, make: Any) -> None:
    p = await make(gemini_openai(sim), "cut-3")
    with pytest.raises(UpstreamConnectError):
        await p.complete(HELLO)


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_body(sim: RunningSim, make: Any, stream: bool) -> None:
    p = await make(gemini_openai(sim), "malformed")
    await failure(UpstreamProtocolError, p, stream=stream)


async def test_content_filter_passes_through(sim: RunningSim, make: Any) -> None:
    p = await make(gemini_openai(sim), "safety")
    c = await p.complete(HELLO)
    assert (c.text, c.finish_reason) == ("", "content_filter")
    assert (await collect(p))[-1].finish_reason == "content_filter"


# --- edge cases no simulator produces --------------------------------------------------------


def _chunk(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    payload = {"object": "chat.completion.chunk", "choices": [choice]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


_EDGES: dict[str, list[bytes]] = {
    # body ends cleanly, but no finish_reason and no [DONE]: a cut that looks tidy
    "eof-no-finish": [_chunk("Hello"), _chunk(" there")],
    # [DONE] without a finish_reason: a complete stream from a terse server
    "done-no-finish": [_chunk("Hello"), b"data: [DONE]\n\n"],
    # vLLM reports a failure after the stream started as an error object
    "error-event": [_chunk("Hel"), b'data: {"error": {"message": "boom", "code": 500}}\n\n'],
    # a chunk whose shape is wrong
    "bad-shape": [b'data: {"choices": [{"delta": {"content": 5}}]}\n\n'],
    # role-only first chunk and empty keep-alive lines are fine
    "chatty": [b": keep-alive\n\n", _chunk(None), _chunk("Hi", "tool_calls")],
}


@pytest.fixture(scope="module")
def edge_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The edge-case server's base URL, and the bodies it received."""
    bodies: list[dict[str, Any]] = []

    def answer(body: dict[str, Any]) -> tuple[bytes, list[bytes]]:
        bodies.append(body)
        return b'{"choices": []}', _EDGES[body["model"]]

    with chat_server(answer) as url:
        yield url, bodies


async def test_clean_eof_without_finish_is_an_error(edge_server: Any, make: Any) -> None:
    p = await make(edge_server[0], "eof-no-finish")
    got: list[Delta] = []
    with pytest.raises(UpstreamConnectError):
        async for d in p.stream(HELLO):
            got.append(d)
    assert joined(got) == "Hello there"


async def test_done_without_finish_is_complete(edge_server: Any, make: Any) -> None:
    p = await make(edge_server[0], "done-no-finish")
    deltas = await collect(p)
    assert joined(deltas) == "Hello"
    assert deltas[-1].finish_reason == "stop"


async def test_error_event_mid_stream(edge_server: Any, make: Any) -> None:
    p = await make(edge_server[0], "error-event")
    with pytest.raises(UpstreamStatusError) as err:
        await collect(p)
    assert err.value.status == 500 and err.value.failover


async def test_wrong_chunk_shape_is_a_protocol_error(edge_server: Any, make: Any) -> None:
    p = await make(edge_server[0], "bad-shape")
    with pytest.raises(UpstreamProtocolError):
        await collect(p)


async def test_200_without_choices_is_a_protocol_error(edge_server: Any, make: Any) -> None:
    p = await make(edge_server[0], "chatty")
    with pytest.raises(UpstreamProtocolError):
        await p.complete(HELLO)


async def test_keepalives_role_chunks_and_tool_calls(edge_server: Any, make: Any) -> None:
    url, bodies = edge_server
    p = await make(url, "chatty", api_key="k1", extra_body={"top_k": 3})
    deltas = await collect(p)
    assert joined(deltas) == "Hi"
    assert deltas[-1].finish_reason == "stop"  # "tool_calls" without a call is a plain stop
    assert bodies[-1]["top_k"] == 3
    assert bodies[-1]["stream_options"] == {"include_usage": True}


# --- the real `transformers serve` -------------------------------------------------------------


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"transformers serve not healthy at {url} after {timeout}s")


@pytest.fixture(scope="module")
def transformers_serve(tiny_model_dir: Path) -> Iterator[tuple[str, str]]:
    """``transformers serve`` pinned to the tiny Gemma: (base_url, model name = its path)."""
    port = free_port()
    cli = Path(sys.executable).parent / "transformers"
    argv = [str(cli), "serve", str(tiny_model_dir), "--device", "cpu"]
    proc = subprocess.Popen(
        [*argv, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield f"{url}/v1", str(tiny_model_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_transformers_serve_complete_and_stream(
    transformers_serve: tuple[str, str], make: Any
) -> None:
    url, model = transformers_serve
    p = await make(url, model)
    req = ChatRequest(messages=(Message("user", "hi"),), max_tokens=4, temperature=0)
    c: Completion = await p.complete(req)
    assert c.finish_reason in ("length", "stop")
    assert c.usage.prompt_tokens > 0 and 0 < c.usage.completion_tokens <= 4
    # transformers serve ends a stream after the finish chunk, without `data: [DONE]`.
    deltas = await collect(p, req)
    assert deltas[-1].finish_reason == c.finish_reason
    assert deltas[-1].usage == c.usage
    assert joined(deltas) == c.text


async def test_transformers_serve_takes_tools(
    transformers_serve: tuple[str, str], make: Any
) -> None:
    """``transformers serve`` renders ``tools`` through the model's chat template and ignores
    ``tool_choice`` (with a warning); the tiny random model answers, text or checked calls."""
    url, model = transformers_serve
    p = await make(url, model)
    tool = Tool("get_time", "The time.", {"type": "object", "properties": {}})
    req = ChatRequest(messages=(Message("user", "hi"),), max_tokens=4, tools=(tool,))
    c = await p.complete(req)
    assert c.finish_reason in ("length", "stop", "tool_calls")
    assert all(call.name == "get_time" for call in c.tool_calls)
    deltas = await collect(p, req)
    assert deltas[-1].finish_reason in ("length", "stop", "tool_calls")


async def test_transformers_serve_rejects_other_models(
    transformers_serve: tuple[str, str], make: Any
) -> None:
    p = await make(transformers_serve[0], "not-the-pinned-path")
    with pytest.raises(UpstreamStatusError) as err:
        await p.complete(HELLO)
    assert err.value.status == 400 and not err.value.failover


async def test_transformers_serve_cannot_continue_a_final_message(
    transformers_serve: tuple[str, str], make: Any
) -> None:
    """transformers 5.24 `serve` rejects vLLM's continuation flags (422) and hard-codes
    add_generation_prompt; the provider reports that truthfully instead of silently starting
    a new turn."""
    url, model = transformers_serve
    p = await make(url, model)
    with pytest.raises(UpstreamStatusError) as err:
        await p.complete(HELLO.continued("Hello"))
    assert err.value.status == 422


async def test_close_is_idempotent(make: Any) -> None:
    p = await make("http://127.0.0.1:9/v1", "m")
    await p.close()
    await p.close()
    assert not p.ready()
    await asyncio.sleep(0)


async def test_transformers_serve_ignores_response_format(
    transformers_serve: tuple[str, str], make: Any
) -> None:
    """Why ``structured_output: none`` exists: ``transformers serve`` answers a request with a
    JSON schema as if it had none (it logs the field as unsupported), so such a backend must
    say it cannot, and failover skips it instead of answering unconstrained."""
    url, model = transformers_serve
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    req = ChatRequest(
        messages=(Message("user", "hi"),), max_tokens=4, temperature=0, response_format=fmt
    )
    ignored = await make(url, model)
    text = (await ignored.complete(req)).text
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = text
    assert not (isinstance(value, dict) and isinstance(value.get("ok"), bool)), text
    skipped = await make(url, model, structured_output="none")
    assert "structured_output: none" in (skipped.unsupported(req) or "")
