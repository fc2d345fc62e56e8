"""``POST /v1/embeddings`` and ``GET /v1/models/{id}`` through the openai SDK against a real
gateway whose embedding backends are the simulated Gemini's two surfaces (native
``:batchEmbedContents`` and the OpenAI-compatible ``/embeddings``): the same model served
twice, so one embedding space. Every answer is checked against OpenAI's schemas by the
fixture's shape check (``CreateEmbeddingResponse``, ``Model``, ``ErrorResponse``)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from standby.sim.gemini_embed import DIMENSIONS, vector
from tests.fixtures.gateway import FAST, ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.openai_schema import problems
from tests.fixtures.sim import RunningSim

MODEL = "gemini-embedding-001"
SPACE = "gemini-embedding-001"
ALIAS = "embed"


def embed_config(sim_url: str, primary: str = MODEL, **route: Any) -> dict[str, Any]:
    """The chat route of ``base_config`` plus an embeddings route: native Gemini (model
    ``primary``) then Gemini's OpenAI surface (model ``MODEL``), one space."""
    config = base_config(sim_url, None)
    config["backends"]["embed"] = {
        "type": "gemini",
        "model": primary,
        "api_key": "sim-key",
        "base_url": sim_url,
        "timeouts": dict(FAST),
        "embeddings": {"space": SPACE, "task_type": "RETRIEVAL_DOCUMENT"},
    }
    config["backends"]["embed_openai"] = {
        "type": "openai",
        "model": MODEL,
        "api_key": "sim-key",
        "base_url": f"{sim_url}/v1beta/openai",
        "timeouts": dict(FAST),
        "embeddings": {"space": SPACE},
    }
    config["routes"][ALIAS] = {"kind": "embeddings", "backends": ["embed", "embed_openai"]}
    config["routes"][ALIAS].update(route)
    config["routes"]["google/gemma-embed"] = {"kind": "embeddings", "backends": ["embed"]}
    return config


@pytest.fixture
def gateway(sim: RunningSim, start_gateway: StartGateway) -> GatewayServer:
    return start_gateway(embed_config(sim.url))


def test_single_and_batch(gateway: GatewayServer, sim: RunningSim) -> None:
    client = gateway.client()
    raw = client.embeddings.with_raw_response.create(
        model=ALIAS, input="hello", encoding_format="float"
    )
    one = raw.parse()
    assert raw.headers["x-standby-backend"] == "embed"
    assert one.model == ALIAS and one.object == "list"
    assert [d.index for d in one.data] == [0]
    assert one.data[0].embedding == vector(MODEL, "hello")
    assert len(one.data[0].embedding) == DIMENSIONS
    texts = ["a", "b", "c"]
    batch = client.embeddings.create(model=ALIAS, input=texts, encoding_format="float")
    assert [d.embedding for d in batch.data] == [vector(MODEL, t) for t in texts]
    assert sim.sim.by_model == {MODEL: 2}  # one call per request: batched


def test_dimensions(gateway: GatewayServer) -> None:
    result = gateway.client().embeddings.create(
        model=ALIAS, input=["x", "y"], dimensions=8, encoding_format="float"
    )
    assert [d.embedding for d in result.data] == [vector(MODEL, "x")[:8], vector(MODEL, "y")[:8]]


def test_base64_is_decoded_by_the_sdk(gateway: GatewayServer) -> None:
    client = gateway.client()
    # The SDK asks for base64 when no encoding_format is given, and decodes it.
    decoded = client.embeddings.create(model=ALIAS, input=["x", "y"])
    assert [d.embedding for d in decoded.data] == [vector(MODEL, "x"), vector(MODEL, "y")]
    explicit = client.embeddings.create(model=ALIAS, input="x", encoding_format="base64")
    assert isinstance(explicit.data[0].embedding, str)


def test_inputs_over_max_batch_go_in_several_calls(
    sim: RunningSim, start_gateway: StartGateway
) -> None:
    config = embed_config(sim.url)
    config["backends"]["embed"]["embeddings"]["max_batch"] = 2
    gw = start_gateway(config)
    texts = [f"text {i}" for i in range(5)]
    result = gw.client().embeddings.create(model=ALIAS, input=texts, encoding_format="float")
    assert [d.embedding for d in result.data] == [vector(MODEL, t) for t in texts]
    assert sim.sim.by_model == {MODEL: 3}


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("error-503", "server_error"), ("error-429", "rate_limited"), ("reset", "connect")],
)
def test_failover_within_the_space(
    sim: RunningSim, start_gateway: StartGateway, fault: str, reason: str
) -> None:
    gw = start_gateway(embed_config(sim.url, primary=fault))
    raw = gw.client().embeddings.with_raw_response.create(
        model=ALIAS, input=["p", "q"], encoding_format="float"
    )
    result = raw.parse()
    assert raw.headers["x-standby-backend"] == "embed_openai"
    assert raw.headers["x-standby-fallback-reason"] == reason
    assert [d.embedding for d in result.data] == [vector(MODEL, "p"), vector(MODEL, "q")]
    assert result.usage.prompt_tokens > 0  # the OpenAI surface counts them
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert (
        f'standby_fallbacks_total{{from_backend="embed",reason="{reason}",route="embed",'
        'to_backend="embed_openai"} 1.0' in metrics
    )
    assert (
        'standby_requests_total{backend="embed_openai",outcome="ok",route="embed"} 1.0' in metrics
    )


def test_breaker_opens_and_skips_the_failing_backend(
    sim: RunningSim, start_gateway: StartGateway
) -> None:
    gw = start_gateway(embed_config(sim.url, primary="error-500"))
    client = gw.client()
    for _ in range(3):  # breaker.failures in base_config
        client.embeddings.create(model=ALIAS, input="x", encoding_format="float")
    assert gw.breaker("embed") == "OPEN"
    calls = sim.sim.by_model.get("error-500")
    raw = client.embeddings.with_raw_response.create(
        model=ALIAS, input="x", encoding_format="float"
    )
    assert raw.headers["x-standby-fallback-reason"] == "breaker_open"
    assert sim.sim.by_model.get("error-500") == calls  # not called while open


def test_client_error_of_the_backend_is_not_failed_over(
    sim: RunningSim, start_gateway: StartGateway
) -> None:
    gw = start_gateway(embed_config(sim.url, primary="error-400"))
    with pytest.raises(openai.BadRequestError) as err:
        gw.client().embeddings.create(model=ALIAS, input="x", encoding_format="float")
    assert err.value.body["code"] == "upstream_rejected"
    assert MODEL not in sim.sim.by_model


def test_every_backend_failing_is_503(sim: RunningSim, start_gateway: StartGateway) -> None:
    gw = start_gateway(embed_config(sim.url))
    sim.sim.set_fault("error-503")
    with pytest.raises(openai.InternalServerError) as err:
        gw.client().embeddings.create(model=ALIAS, input="x", encoding_format="float")
    assert err.value.status_code == 503
    assert err.value.body["code"] == "all_backends_failed"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [1, 2, 3]}, "input.0"),
        ({"input": [[1, 2], [3]]}, "input.0"),
        ({"input": []}, "input"),
        ({"input": ["ok", ""]}, "input.1"),
        ({"input": ["ok", 7.5]}, "input.1"),
        ({"input": {"text": "x"}}, "input"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "dimensions": 10**27}, "dimensions"),  # was a 500 in the encoder
        ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"input": ["a", "b", "c"]}, "input"),  # over max_inputs
        ({"input": "x" * 101}, "input"),  # over max_input_chars
        ({}, "input"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    sim: RunningSim, start_gateway: StartGateway, body: dict[str, Any], param: str
) -> None:
    gw = start_gateway(embed_config(sim.url, max_inputs=2, max_input_chars=100))
    r = httpx.post(f"{gw.url}/v1/embeddings", json={"model": ALIAS, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert sim.sim.requests == 0


def test_routes_of_the_other_kind(gateway: GatewayServer) -> None:
    client = gateway.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=ROUTE, input="x", encoding_format="float")
    assert err.value.body["param"] == "model"
    assert ALIAS in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": "x"}])
    assert "POST /v1/embeddings" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError) as err:
        client.embeddings.create(model="nope", input="x", encoding_format="float")
    assert err.value.body["code"] == "model_not_found"


def test_models_retrieve(gateway: GatewayServer) -> None:
    client = gateway.client()
    for alias in (ROUTE, ALIAS, "google/gemma-embed"):
        model = client.models.retrieve(alias)
        assert (model.id, model.object, model.owned_by) == (alias, "model", "standby")
    assert {m.id for m in client.models.list()} == {ROUTE, ALIAS, "google/gemma-embed"}
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("google/nothing")
    assert err.value.body["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/v1/nothing-here", 404, None),
        ("POST", "/v1/completions", 404, None),
        ("GET", "/nothing", 404, None),
        ("GET", "/v1/embeddings", 405, "POST"),
        ("GET", "/v1/chat/completions", 405, "POST"),
        ("DELETE", "/v1/models", 405, "GET"),
    ],
)
def test_unknown_paths_and_methods_in_openai_shape(
    gateway: GatewayServer, method: str, path: str, status: int, allow: str | None
) -> None:
    r = httpx.request(method, f"{gateway.url}{path}")
    assert r.status_code == status
    assert r.headers.get("allow") == allow
    body = r.json()
    assert problems("ErrorResponse", body) == []
    assert body["error"]["message"].endswith(f"({method} {path})")
