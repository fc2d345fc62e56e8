"""Fuzz the HTTP API from its own OpenAPI document (schemathesis: valid and invalid bodies,
headers and query strings generated from the schema) against a real gateway on the simulated
Gemini: no 500, no traceback, and every error from the chat endpoint in OpenAI's shape."""

from __future__ import annotations

import os
from collections.abc import Iterator

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from schemathesis import BaseSchema, GenerationMode
from schemathesis.checks import not_a_server_error

from standby.config import parse_settings
from tests.fixtures.drill_report import Record
from tests.fixtures.gateway import GatewayServer, base_config
from tests.fixtures.sim import RunningSim

# Per operation and generation mode: ~10 s in all here; a longer run for the figures in
# docs/reliability.md: STANDBY_FUZZ_EXAMPLES=1000.
EXAMPLES = int(os.environ.get("STANDBY_FUZZ_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def fuzzed_gateway(gemini_sim: RunningSim) -> Iterator[GatewayServer]:
    config = base_config(gemini_sim.url, None)
    config["server"]["max_body_bytes"] = 65_536
    config["backends"]["embed"] = {
        "type": "gemini",
        "model": "gemini-embedding-001",
        "base_url": gemini_sim.url,
        "embeddings": {"space": "gemini-embedding-001"},
    }
    config["routes"]["embed"] = {"kind": "embeddings", "backends": ["embed"]}
    server = GatewayServer(parse_settings(config, "test"))
    server.start(timeout=60)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_gateway: GatewayServer) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed_gateway.url}/openapi.json")


def check_openai_error(case: schemathesis.Case, response: schemathesis.Response) -> None:
    assert response.status_code < 500 or response.status_code == 503, response.text[:300]
    assert "Traceback" not in response.text
    if response.status_code >= 400 and case.path.startswith("/v1/"):
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert {"message", "type", "param", "code"} <= set(error)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_from_its_schema(
    api_schema: BaseSchema, mode: GenerationMode, drill_report: Record
) -> None:
    """Every operation of the OpenAPI document, with schema-valid (positive) or schema-violating
    (negative) requests. The schema has no links (nothing is created and fetched back), so a
    stateful run would only repeat these calls."""
    calls: dict[str, int] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            case.validate_response(response, checks=[not_a_server_error])
            check_openai_error(case, response)
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1

        try:
            fuzz()
        except hypothesis.errors.Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # no input to get wrong (GET /healthz)
    assert "POST /v1/chat/completions" in calls and "POST /v1/embeddings" in calls
    assert sum(calls.values()) >= EXAMPLES
    drill_report(
        drill=f"schemathesis {mode.value} fuzz",
        tried=calls,
        requests=sum(calls.values()),
        errors=0,
        result="no 5xx, no traceback, chat errors in OpenAI shape",
    )
