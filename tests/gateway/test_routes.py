"""The HTTP surface, driven by the official openai SDK against a real uvicorn gateway."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

HELLO = [{"role": "user", "content": "Say hello to the gateway."}]


@pytest.fixture
def gateway(sim: RunningSim, start_gateway: StartGateway) -> GatewayServer:
    return start_gateway(base_config(sim.url, None))


def test_completion_is_answered_by_the_primary(gateway: GatewayServer, sim: RunningSim) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(model=ROUTE, messages=HELLO)
    completion = raw.parse()
    assert raw.headers["x-standby-backend"] == "gemini"
    assert "x-standby-fallback-reason" not in raw.headers
    assert completion.model == ROUTE
    assert completion.choices[0].message.content.startswith("Simulated Gemini answer to:")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion.model_extra["standby"]["provenance"] == "primary"
    assert sim.sim.requests == 1


def test_stream_matches_the_whole_answer(gateway: GatewayServer) -> None:
    client = gateway.client()
    whole = client.chat.completions.create(model=ROUTE, messages=HELLO)
    chunks = list(
        client.chat.completions.create(
            model=ROUTE, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stream_ends_with_done(gateway: GatewayServer) -> None:
    body = {"model": ROUTE, "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert lines.count("data: [DONE]") == 1
    first = json.loads(lines[0].removeprefix("data: "))
    assert first["choices"][0]["delta"]["role"] == "assistant"


def test_parameters_and_unknown_fields_are_accepted(gateway: GatewayServer) -> None:
    completion = gateway.client().chat.completions.create(
        model=ROUTE,
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],
        temperature=0.2,
        top_p=0.9,
        max_completion_tokens=5,
        stop=["zzz"],
        seed=7,
        user="u-1",
        extra_body={"some_future_field": {"x": 1}},
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens <= 5


def test_json_response_format_reaches_gemini(gateway: GatewayServer) -> None:
    completion = gateway.client().chat.completions.create(
        model=ROUTE, messages=HELLO, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(completion.choices[0].message.content), dict)


def test_models_lists_route_aliases(gateway: GatewayServer) -> None:
    models = gateway.client().models.list()
    assert [m.id for m in models.data] == [ROUTE]


def test_health_and_readiness(gateway: GatewayServer) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["backends"]["gemini"] == {
        "ready": True,
        "breaker": "closed",
        "retry_in_s": 0.0,
    }


def test_unknown_model_is_404_in_openai_shape(gateway: GatewayServer) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        gateway.client().chat.completions.create(model="gpt-nope", messages=HELLO)
    assert err.value.body["code"] == "model_not_found"
    assert err.value.body["param"] == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": ROUTE}, "messages"),
        ({"model": ROUTE, "messages": []}, "messages"),
        ({"model": ROUTE, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"model": ROUTE, "messages": HELLO, "n": 9}, "n"),
        ({"model": ROUTE, "messages": HELLO, "temperature": -1}, "temperature"),
        ({"model": ROUTE, "messages": HELLO, "logit_bias": {"x": 1}}, "logit_bias"),
        ({"model": ROUTE, "messages": HELLO, "logit_bias": {"9" * 5000: 1}}, "logit_bias"),
    ],
)
def test_invalid_requests_are_400(
    gateway: GatewayServer, body: dict[str, object], param: str
) -> None:
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert set(error) == {"message", "type", "param", "code"}


def test_malformed_json_is_400(gateway: GatewayServer) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=b'{"model": "x", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert "Traceback" not in r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_body_over_the_limit_is_413(sim: RunningSim, start_gateway: StartGateway) -> None:
    gw = start_gateway(base_config(sim.url, None), server={"max_body_bytes": 2048})
    big = [{"role": "user", "content": "x" * 4096}]
    with pytest.raises(openai.APIStatusError) as err:
        gw.client().chat.completions.create(model=ROUTE, messages=big)
    assert err.value.status_code == 413
    assert sim.sim.requests == 0


def test_unknown_path_is_404_in_openai_shape(gateway: GatewayServer) -> None:
    r = httpx.get(f"{gateway.url}/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_gateway_keys(sim: RunningSim, start_gateway: StartGateway) -> None:
    gw = start_gateway(base_config(sim.url, None), server={"api_keys": ["k-right"]})
    with pytest.raises(openai.AuthenticationError):
        gw.client(api_key="k-wrong").chat.completions.create(model=ROUTE, messages=HELLO)
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": ROUTE, "messages": HELLO})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert sim.sim.requests == 0
    ok = gw.client(api_key="k-right").chat.completions.create(model=ROUTE, messages=HELLO)
    assert ok.choices[0].message.content


def test_upstream_key_never_reaches_the_client(
    sim_with_key: RunningSim, start_gateway: StartGateway
) -> None:
    config = base_config(sim_with_key.url, None)
    config["backends"]["gemini"]["api_key"] = "sim-key"
    gw = start_gateway(config)
    raw = gw.client().chat.completions.with_raw_response.create(model=ROUTE, messages=HELLO)
    assert raw.parse().choices[0].message.content
    config["backends"]["gemini"]["api_key"] = "wrong-secret-key"
    bad = start_gateway(config)
    r = httpx.post(f"{bad.url}/v1/chat/completions", json={"model": ROUTE, "messages": HELLO})
    assert r.status_code == 503
    assert "wrong-secret-key" not in r.text
    assert r.json()["standby"]["errors"][0]["reason"] == "auth"
    metrics = httpx.get(f"{bad.url}/metrics").text
    assert "wrong-secret-key" not in metrics


def test_request_id_and_one_access_log_line(
    gateway: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret_prompt = "my secret prompt 4111 1111 1111 1111"
    with caplog.at_level("INFO", logger="standby.access"):
        raw = gateway.client().chat.completions.with_raw_response.create(
            model=ROUTE,
            messages=[{"role": "user", "content": secret_prompt}],
            extra_headers={"x-request-id": "req-42"},
        )
        answer = raw.parse().choices[0].message.content or ""
        generated = httpx.post(
            f"{gateway.url}/v1/chat/completions", json={"model": "nope", "messages": HELLO}
        )
        list(gateway.client().chat.completions.create(model=ROUTE, messages=HELLO, stream=True))
        # The stream's line is written once the server has finished it, which can be just
        # after the client read its last chunk.
        deadline = time.monotonic() + 10
        while sum(r.name == "standby.access" for r in caplog.records) < 3:
            assert time.monotonic() < deadline, "no access-log line for the stream"
            time.sleep(0.01)
    assert raw.headers["x-request-id"] == "req-42"
    assert generated.status_code == 404 and len(generated.headers["x-request-id"]) == 32
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "standby.access"]
    assert [(e["status"], e["stream"]) for e in lines] == [(200, False), (404, False), (200, True)]
    first = lines[0]
    assert first["request_id"] == "req-42"
    assert first["route"] == ROUTE and first["backend"] == "gemini"
    assert first["tokens_out"] > 0 and first["latency_ms"] > 0
    assert lines[2]["ttft_ms"] is not None
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert secret_prompt not in logged and answer[:30] not in logged


def test_metric_series_stay_bounded(gateway: GatewayServer) -> None:
    """1,000 different model strings and keys must not create 1,000 series."""
    with httpx.Client(base_url=gateway.url) as http:
        for i in range(1000):
            http.post(
                "/v1/chat/completions",
                json={"model": f"model-{i}", "messages": HELLO},
                headers={"authorization": f"Bearer key-{i}", "x-request-id": f"r{i}"},
            )
        http.post("/v1/chat/completions", json={"model": ROUTE, "messages": HELLO})
        text = http.get("/metrics").text
    series = [line for line in text.splitlines() if line.startswith("standby_")]
    assert len(series) < 200
    assert "model-" not in text and "key-" not in text and "r99" not in text
