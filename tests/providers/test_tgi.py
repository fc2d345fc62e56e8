"""TGIProvider against the simulated TGI server (standby.sim.tgi), through the real
huggingface_hub client, and prompt rendering with the tiny Gemma's real chat template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from standby.config import TGIBackend
from standby.errors import (
    ConfigError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from standby.protocol import ChatRequest, Delta, Message
from standby.providers.tgi import TGIProvider
from standby.sim.tgi import ANSWER
from standby.tool_calls import Tool, ToolCall
from tests.fixtures.providers import HELLO, Start, collect, failure, joined
from tests.fixtures.tgi_sim import RunningTGI


@pytest.fixture
def make(started: Start) -> Any:
    async def _make(base_url: str, **kw: Any) -> TGIProvider:
        return await started(TGIProvider("tgi", TGIBackend(type="tgi", base_url=base_url, **kw)))

    return _make


# --- the built-in Gemma turn format (standby.chat_format.gemma_prompt) -----------------------


async def test_default_prompt_is_gemmas_turn_format(tgi_sim: RunningTGI, make: Any) -> None:
    p = await make(tgi_sim.url)
    req = ChatRequest(messages=(Message("system", "Be brief."), Message("user", " Hi ")))
    await p.complete(req)
    assert tgi_sim.requests[0]["body"]["inputs"] == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )


# --- against the simulated TGI ----------------------------------------------------------------


async def test_complete_ok(tgi_sim: RunningTGI, make: Any) -> None:
    p = await make(tgi_sim.url)
    assert p.ready()
    c = await p.complete(HELLO)
    assert c.text == ANSWER  # not prompt + answer: return_full_text is sent as false
    assert c.finish_reason == "stop"
    assert c.usage.completion_tokens == len(ANSWER.split()) + 1  # + the EOS token
    assert c.usage.prompt_tokens == 4  # from TGI's x-prompt-tokens header
    [seen] = tgi_sim.requests
    assert seen["path"] == "/"
    assert seen["body"] == {
        "inputs": "<start_of_turn>user\nSay hello<end_of_turn>\n<start_of_turn>model\n",
        "parameters": {"details": True, "return_full_text": False, "max_new_tokens": 512},
        "stream": False,
    }


async def test_stream_matches_complete_with_usage(tgi_sim: RunningTGI, make: Any) -> None:
    p = await make(tgi_sim.url)
    whole = await p.complete(HELLO)
    deltas = await collect(p)
    assert joined(deltas) == whole.text == ANSWER
    assert len(deltas) > 5
    last = deltas[-1]
    assert last.finish_reason == "stop"
    assert last.usage is not None
    assert last.usage == whole.usage  # the stream's count is details.input_length


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


async def test_parameters_follow_tgi_rules(tgi_sim: RunningTGI, make: Any) -> None:
    p = await make(tgi_sim.url, max_new_tokens=64)
    greedy = ChatRequest(messages=HELLO.messages, temperature=0.0, top_p=1.0, seed=7)
    await p.complete(greedy)
    sampled = ChatRequest(
        messages=HELLO.messages,
        temperature=0.7,
        top_p=0.9,
        seed=7,
        max_tokens=30,
        response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}},
    )
    await collect(p, sampled)
    first, second = (r["body"] for r in tgi_sim.requests)
    # TGI rejects temperature 0 and top_p 1: greedy is do_sample false.
    assert first["parameters"] == {
        "details": True,
        "do_sample": False,
        "max_new_tokens": 64,
        "return_full_text": False,
        "seed": 7,
    }
    assert second["stream"] is True
    assert second["parameters"] == {
        "details": True,
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_new_tokens": 30,
        "return_full_text": False,
        "seed": 7,
        "grammar": {"type": "json", "value": SCHEMA},
    }


async def test_stop_sequence_is_dropped_like_openai(tgi_sim: RunningTGI, make: Any) -> None:
    p = await make(tgi_sim.url)
    req = ChatRequest(messages=HELLO.messages, stop=("TGI",))
    expected = ANSWER[: ANSWER.index("TGI")]
    c = await p.complete(req)
    assert (c.text, c.finish_reason) == (expected, "stop")
    deltas = await collect(p, req)
    assert joined(deltas) == expected
    assert not any("TGI" in d.text for d in deltas)
    assert tgi_sim.requests[0]["body"]["parameters"]["stop"] == ["TGI"]


async def test_max_tokens_gives_length(tgi_sim: RunningTGI, make: Any) -> None:
    p = await make(tgi_sim.url)
    req = ChatRequest(messages=HELLO.messages, max_tokens=3)
    c = await p.complete(req)
    assert (c.text, c.finish_reason) == ("Hello from the", "length")
    assert (await collect(p, req))[-1].finish_reason == "length"


async def test_continue_final_prompt(tgi_sim: RunningTGI, make: Any) -> None:
    p = await make(tgi_sim.url)
    await p.complete(HELLO.continued("Hello, wor"))
    assert tgi_sim.requests[0]["body"]["inputs"].endswith("<start_of_turn>model\nHello, wor")


async def test_no_hub_token_leaks_to_the_server(
    tgi_sim: RunningTGI, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_user_secret")
    anonymous = await make(tgi_sim.url)
    await anonymous.complete(HELLO)
    await collect(anonymous)
    keyed = await make(tgi_sim.url, api_key="tgi-key")
    await keyed.complete(HELLO)
    auth = [r["authorization"] for r in tgi_sim.requests]
    assert auth == [None, None, "Bearer tgi-key"]


@pytest.mark.parametrize("stream", [False, True])
async def test_429_carries_retry_after(tgi_sim: RunningTGI, make: Any, stream: bool) -> None:
    tgi_sim.set_fault("error-429-retry-7")
    p = await make(tgi_sim.url)
    err = await failure(UpstreamStatusError, p, stream=stream)
    assert (err.status, err.retry_after) == (429, 7)
    assert err.reason == "rate_limited" and err.failover


@pytest.mark.parametrize("stream", [False, True])
async def test_tgi_overloaded_is_429(tgi_sim: RunningTGI, make: Any, stream: bool) -> None:
    """TGI's own overload: a 429 JSON answer, or (stream) an error event after a 200."""
    tgi_sim.set_fault("overloaded")
    p = await make(tgi_sim.url)
    err = await failure(UpstreamStatusError, p, stream=stream)
    assert err.status == 429
    assert "overloaded" in err.upstream_message


@pytest.mark.parametrize("stream", [False, True])
async def test_503_fails_over(tgi_sim: RunningTGI, make: Any, stream: bool) -> None:
    tgi_sim.set_fault("error-503")
    p = await make(tgi_sim.url)
    err = await failure(UpstreamStatusError, p, stream=stream)
    assert err.status == 503 and err.failover


@pytest.mark.parametrize("status", [400, 422])
@pytest.mark.parametrize("stream", [False, True])
async def test_client_errors_do_not_fail_over(
    tgi_sim: RunningTGI, make: Any, stream: bool, status: int
) -> None:
    tgi_sim.set_fault(f"error-{status}")
    p = await make(tgi_sim.url)
    err = await failure(UpstreamStatusError, p, stream=stream)
    assert err.status == status
    assert not err.failover and not err.counts


async def test_generation_error_mid_stream(tgi_sim: RunningTGI, make: Any) -> None:
    tgi_sim.set_fault("stream-error-3")
    p = await make(tgi_sim.url)
    got: list[Delta] = []
    with pytest.raises(UpstreamStatusError) as err:
        async for d in p.stream(HELLO):
            got.append(d)
    assert err.value.status == 424 and err.value.failover
    assert joined(got) == "Hello from the"


@pytest.mark.parametrize("fault", ["cut-3", "end-3"])
async def test_broken_stream_is_an_error_not_success(
    tgi_sim: RunningTGI, make: Any, fault: str
) -> None:
    """cut: the connection is aborted mid-body; end: the body ends cleanly but without TGI's
    final event. Neither may look like a finished answer."""
    tgi_sim.set_fault(fault)
    p = await make(tgi_sim.url)
    got: list[Delta] = []
    with pytest.raises(UpstreamConnectError):
        async for d in p.stream(HELLO):
            got.append(d)
    assert joined(got) == "Hello from the"
    assert all(d.finish_reason is None for d in got)


async def test_cut_whole_answer(tgi_sim: RunningTGI, make: Any) -> None:
    tgi_sim.set_fault("cut-0")
    p = await make(tgi_sim.url)
    with pytest.raises(UpstreamConnectError):
        await p.complete(HELLO)


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_body(tgi_sim: RunningTGI, make: Any, stream: bool) -> None:
    tgi_sim.set_fault("malformed")
    p = await make(tgi_sim.url)
    await failure(UpstreamProtocolError, p, stream=stream)


@pytest.mark.parametrize("stream", [False, True])
async def test_connection_refused(make: Any, stream: bool, refused_port: int) -> None:
    p = await make(f"http://127.0.0.1:{refused_port}")
    await failure(UpstreamConnectError, p, stream=stream)


async def test_abandoned_stream_releases_its_connection(tgi_sim: RunningTGI, make: Any) -> None:
    p = await make(tgi_sim.url)
    for _ in range(3):
        stream = p.stream(HELLO)
        assert (await anext(stream)).text
        await stream.aclose()  # what the router does on a timeout or a client disconnect
    assert joined(await collect(p)) == ANSWER


# --- the chat template of chat_template_model ---------------------------------------------------


async def test_chat_template_model_renders_the_prompt(
    tgi_sim: RunningTGI, make: Any, tiny_model_dir: Path
) -> None:
    p = await make(tgi_sim.url, chat_template_model=str(tiny_model_dir))
    req = ChatRequest(messages=(Message("system", "Be brief."), Message("user", "Hi")))
    assert (await p.complete(req)).text == ANSWER
    await p.complete(req.continued("Hello, wor"))
    first, second = (r["body"]["inputs"] for r in tgi_sim.requests)
    # The template's BOS is dropped: TGI's tokenizer adds it.
    assert first == "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert second.startswith("<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n")
    assert second.endswith("<start_of_turn>model\nHello, wor")


async def test_a_late_system_message_is_folded_as_the_local_backend_does(
    tgi_sim: RunningTGI, make: Any, tiny_model_dir: Path
) -> None:
    """The tiny Gemma's template rejects a system message after the first turn; the prompt is
    rendered again with the system text folded into the first user turn."""
    p = await make(tgi_sim.url, chat_template_model=str(tiny_model_dir))
    req = ChatRequest(messages=(Message("user", "Hi"), Message("system", "Be brief.")))
    await p.complete(req)
    assert tgi_sim.requests[0]["body"]["inputs"] == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )


async def test_chat_template_that_cannot_render(
    tgi_sim: RunningTGI, make: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = "{{ raise_exception('this template renders nothing') }}"
    tokenizer.save_pretrained(tmp_path)
    p = await make(tgi_sim.url, chat_template_model=str(tmp_path))
    with pytest.raises(UpstreamProtocolError, match="chat template cannot render"):
        await p.complete(HELLO)
    assert tgi_sim.requests == []


async def test_missing_chat_template_model_fails_start(tmp_path: Path) -> None:
    p = TGIProvider(
        "tgi",
        TGIBackend(
            type="tgi", base_url="http://127.0.0.1:9", chat_template_model=str(tmp_path / "nope")
        ),
    )
    with pytest.raises(ConfigError, match=r"backends\.tgi\.chat_template_model"):
        await p.start()
    await p.close()


# --- the simulation's wire format, as a TGI client sees it --------------------------------------


async def test_sim_speaks_tgi_native(tgi_sim: RunningTGI) -> None:
    body = {"inputs": "Q: hi\nA:", "parameters": {"max_new_tokens": 2}}
    async with aiohttp.ClientSession() as s:
        async with s.post(tgi_sim.url + "/", json=body) as r:
            # `/` answers a one-element list and, as for a text-generation model, echoes the
            # prompt unless return_full_text is false.
            assert await r.json() == [{"generated_text": "Q: hi\nA:Hello from"}]
        async with s.post(tgi_sim.url + "/generate", json=body) as r:
            assert await r.json() == {"generated_text": "Hello from"}
        async with s.post(tgi_sim.url + "/generate_stream", json=body) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            events = [line async for line in r.content if line.strip()]
        assert len(events) == 2 and all(e.startswith(b"data:{") for e in events)
        async with s.post(
            tgi_sim.url + "/generate", json={"inputs": "x", "parameters": {"temperature": 0}}
        ) as r:
            assert r.status == 422
            assert (await r.json())["error_type"] == "validation"
        async with s.get(tgi_sim.url + "/info") as r:
            assert (await r.json())["max_stop_sequences"] == 4
        async with s.get(tgi_sim.url + "/health") as r:
            assert r.status == 200
        async with s.post(tgi_sim.url + "/_sim/fault", json={"fault": "nonsense"}) as r:
            assert r.status == 400
        async with s.post(tgi_sim.url + "/_sim/fault", json={"fault": "error-503"}) as r:
            assert r.status == 200
        async with s.post(tgi_sim.url + "/generate", json=body) as r:
            assert r.status == 503


async def test_tools_are_unsupported_on_the_native_api(tgi_sim: RunningTGI, make: Any) -> None:
    """TGI's native route has no tool calling: a request that offers tools, or whose history
    holds calls and results, is skipped (its Messages API is an ``openai`` backend)."""
    p = await make(tgi_sim.url)
    offered = ChatRequest(messages=HELLO.messages, tools=(Tool("get_time"),))
    call = ToolCall("c1", "get_time")
    history = (
        *HELLO.messages,
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "noon", tool_call_id="c1", name="get_time"),
    )
    for req in (offered, ChatRequest(messages=history)):
        reason = p.unsupported(req)
        assert reason is not None and "openai-type backend" in reason
    assert p.unsupported(HELLO) is None
    assert tgi_sim.requests == []
