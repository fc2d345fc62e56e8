"""Mid-stream failover end to end: a stream cut after content continues on the fallback from the
partial answer, as one well-formed stream, on the real providers (the local Gemma, a second
Gemini). The other stitching rows (idle and total time limits, nothing left to continue, a
continuation continued) are in-process in test_failover_table.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

HELLO = [{"role": "user", "content": "Stream me a long answer please."}]
BODY = {"model": ROUTE, "messages": HELLO, "stream": True}


def sse_events(gw: GatewayServer) -> tuple[httpx.Headers, list[str]]:
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=BODY, timeout=60) as r:
        assert r.status_code == 200
        return r.headers, [line.removeprefix("data: ") for line in r.iter_lines() if line]


def content(events: list[str]) -> str:
    parts = []
    for e in events:
        if e != "[DONE]":
            data: dict[str, Any] = json.loads(e)
            for choice in data.get("choices", []):
                parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


def whole_answer(gw: GatewayServer) -> str:
    done = gw.client().chat.completions.create(model=ROUTE, messages=HELLO)
    return done.choices[0].message.content or ""


def test_cut_stream_is_stitched_onto_the_local_fallback(
    sim: RunningSim, tiny_model_dir: Path, start_gateway: StartGateway
) -> None:
    gw = start_gateway(base_config(sim.url, tiny_model_dir))
    full = whole_answer(gw)
    sim.sim.set_fault("cut-3")
    headers, events = sse_events(gw)
    assert headers["x-standby-backend"] == "gemini"
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    final = json.loads(events[-2])
    assert final["standby"] == {
        "backend": "gemma",
        "provenance": "stitched",
        "fallback_reason": "mid_stream",
    }
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    text = content(events)
    partial = full[: len(text)]
    # The first three chunks are Gemini's, then the fallback's continuation follows.
    assert text.startswith(partial[: len(full) // 8])
    assert len(text) > len(full) // 8 * 3 - 10
    assert gw.breaker("gemini") == "CLOSED"  # one failure counted, threshold is three


def test_stitched_stream_equals_the_unbroken_answer(
    sim: RunningSim, start_gateway: StartGateway
) -> None:
    config = base_config(sim.url, None)
    # A second simulated Gemini whose model name pins it to "ok" continues the answer.
    config["backends"]["backup"] = {"type": "gemini", "model": "ok", "base_url": sim.url}
    config["routes"] = {ROUTE: ["gemini", "backup"]}
    gw = start_gateway(config)
    sim.sim.set_fault("ok")
    expected = content(sse_events(gw)[1])
    sim.sim.set_fault("cut-3")
    headers, events = sse_events(gw)
    assert headers["x-standby-backend"] == "gemini"  # the header went out with Gemini's chunks
    assert content(events) == expected
    final = json.loads(events[-2])
    assert final["standby"]["provenance"] == "stitched"
    assert final["standby"]["backend"] == "backup"
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert (
        'standby_fallbacks_total{from_backend="gemini",reason="mid_stream",route="gemini-2.5-flash",'
        'to_backend="backup"} 1.0' in metrics
    )


def test_a_finished_stream_is_the_backends_success(
    sim: RunningSim, start_gateway: StartGateway
) -> None:
    """A stream that ended cleanly is a success of its backend's breaker: it closes a half-open
    breaker (it was the probe) and resets the count of consecutive failures. (The client's
    last piece ends the body, so the failover's own generator is closed before it reads past
    that piece: the verdict must not wait for that read.)"""
    gw = start_gateway(base_config(sim.url, None), breaker={"failures": 2, "cooldown_s": 0.5})
    sim.sim.set_fault("error-503")
    for _ in range(2):
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=BODY, timeout=30)
        assert r.status_code == 503
    assert gw.breaker("gemini") == "OPEN"
    sim.sim.set_fault("ok")
    time.sleep(0.6)  # the cool-down: the next request is the probe
    assert content(sse_events(gw)[1])
    assert gw.breaker("gemini") == "CLOSED"
    sim.sim.set_fault("error-503")  # one failure after a streamed success: not 2 in a row
    r = httpx.post(f"{gw.url}/v1/chat/completions", json=BODY, timeout=30)
    assert r.status_code == 503
    assert gw.breaker("gemini") == "CLOSED"
