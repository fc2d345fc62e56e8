"""Failover end to end, as smoke: real uvicorn, the simulated Gemini as primary, the tiny local
Gemma served in-process as fallback, the official SDK as client. Every row of the
failover table is checked in-process in test_failover_table.py (a fake backend), and how the
Gemini provider turns each fault into an error in tests/providers/test_gemini_errors.py."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

HELLO = [{"role": "user", "content": "Tell me about failover."}]


@pytest.fixture
def gateway(sim: RunningSim, tiny_model_dir: Path, start_gateway: StartGateway) -> GatewayServer:
    # A long cool-down: once open, the breaker stays open for the rest of the test.
    return start_gateway(base_config(sim.url, tiny_model_dir), breaker={"cooldown_s": 60})


def ask(gw: GatewayServer, *, stream: bool = False) -> tuple[httpx.Headers, str, str | None]:
    """One request through the SDK: (headers, answer text, finish reason)."""
    client = gw.client()
    if not stream:
        raw = client.chat.completions.with_raw_response.create(model=ROUTE, messages=HELLO)
        done = raw.parse()
        return raw.headers, done.choices[0].message.content or "", done.choices[0].finish_reason
    raw_stream = client.chat.completions.with_raw_response.create(
        model=ROUTE, messages=HELLO, stream=True
    )
    chunks = list(raw_stream.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    return raw_stream.headers, text, finish


FAILOVER = [("error-503", "server_error"), ("reset", "connect")]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("fault", "reason"), FAILOVER)
def test_failure_moves_to_the_fallback_and_counts(
    gateway: GatewayServer, sim: RunningSim, fault: str, reason: str, stream: bool
) -> None:
    sim.sim.set_fault(fault)
    for attempt in range(3):
        headers, _, finish = ask(gateway, stream=stream)
        assert headers["x-standby-backend"] == "gemma"
        assert headers["x-standby-fallback-reason"] == reason
        assert finish in ("stop", "length")
        expected = "CLOSED" if attempt < 2 else "OPEN"
        assert gateway.breaker("gemini") == expected
    assert sim.sim.requests == 3
    # Open breaker: the primary is skipped without being called.
    headers, _, _ = ask(gateway, stream=stream)
    assert headers["x-standby-fallback-reason"] == "breaker_open"
    assert sim.sim.requests == 3


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_hanging_primary_times_out_and_fails_over(
    sim: RunningSim, tiny_model_dir: Path, start_gateway: StartGateway, stream: bool
) -> None:
    config = base_config(sim.url, tiny_model_dir)
    config["backends"]["gemini"]["timeouts"] = {
        "connect_s": 1,
        "first_token_s": 0.5,
        "idle_s": 0.5,
        "total_s": 0.7,
    }
    gw = start_gateway(config)
    sim.sim.set_fault("hang")
    headers, _, _ = ask(gw, stream=stream)
    assert headers["x-standby-backend"] == "gemma"
    assert headers["x-standby-fallback-reason"] == "timeout"


def test_every_backend_failing_is_a_503_naming_each(
    sim: RunningSim, start_gateway: StartGateway, refused_port: int
) -> None:
    config = base_config(sim.url, None)
    config["backends"]["backup"] = {
        "type": "gemini",
        "model": ROUTE,
        "base_url": f"http://127.0.0.1:{refused_port}",
    }
    config["routes"] = {ROUTE: ["gemini", "backup"]}
    gw = start_gateway(config)
    sim.sim.set_fault("error-503")
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": ROUTE, "messages": HELLO})
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) >= 1
    body = r.json()
    assert body["error"]["code"] == "all_backends_failed"
    assert [(e["backend"], e["reason"]) for e in body["standby"]["errors"]] == [
        ("gemini", "server_error"),
        ("backup", "connect"),
    ]
    with pytest.raises(openai.InternalServerError):
        gw.client().chat.completions.create(model=ROUTE, messages=HELLO, stream=True)
