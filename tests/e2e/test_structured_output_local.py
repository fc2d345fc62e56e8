"""Structured output while the primary is down, on the local fallback: a real gateway whose
route is the simulated Gemini (answering 503) then the local backend on a tiny random-weight
Gemma 4. The weights say gibberish, so whatever parses as the Pydantic model is the grammar's
doing (constrained decoding, ``providers.local_grammar``). Clients: the openai SDK's ``parse()``
and ``stream()``, and langchain-openai's ``with_structured_output`` (``json_schema``; its
``function_calling`` needs a model that calls tools, which random weights do not)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.e2e.conftest import gemini_backend, serve
from tests.fixtures.gateway import GatewayServer
from tests.fixtures.sim import RunningSim

ROUTE = "so-local"
ASK = [{"role": "user", "content": "Is Oslo in Norway?"}]


class Verdict(BaseModel):
    """Bounded fields: a random model finishes the JSON within its token budget."""

    answer: Literal["yes", "no", "maybe"]
    score: Annotated[int, Field(ge=0, le=100)]
    sure: bool


@pytest.fixture(scope="module")
def gateway(gemini_sim: RunningSim, tiny_gemma4_dir: Path) -> Iterator[GatewayServer]:
    local = {
        "type": "local",
        "model": str(tiny_gemma4_dir),
        "device": "cpu",
        "max_new_tokens": 48,
        "threads": 1,
        "timeouts": {"connect_s": 1, "first_token_s": 30, "idle_s": 30, "total_s": 60},
    }
    server = serve(
        {"gemini": gemini_backend("gemini-3-flash-preview", gemini_sim.url), "gemma": local},
        {ROUTE: ["gemini", "gemma"]},
    )
    yield server
    server.stop()


def test_parse_succeeds_on_the_local_fallback(gateway: GatewayServer, down: RunningSim) -> None:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="u", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.parse(
            model=ROUTE,
            messages=ASK,  # type: ignore[arg-type]
            response_format=Verdict,
            temperature=0,
        )
        with client.chat.completions.stream(
            model=ROUTE,
            messages=ASK,  # type: ignore[arg-type]
            response_format=Verdict,
            temperature=0,
        ) as stream:
            streamed = stream.get_final_completion()
    assert raw.headers["x-standby-backend"] == "gemma"
    assert raw.headers["x-standby-fallback-reason"] == "server_error"
    verdict = raw.parse().choices[0].message.parsed
    assert isinstance(verdict, Verdict)
    assert streamed.choices[0].message.parsed == verdict  # greedy: whole and streamed agree


def test_langchain_json_schema_succeeds_on_the_local_fallback(
    gateway: GatewayServer, down: RunningSim
) -> None:
    seen: list[str] = []

    def record(response: httpx.Response) -> None:
        seen.append(response.headers.get("x-standby-backend", ""))

    with httpx.Client(event_hooks={"response": [record]}) as http:
        model = ChatOpenAI(
            model=ROUTE,
            base_url=f"{gateway.url}/v1",
            api_key="unused",  # type: ignore[arg-type]
            max_retries=0,
            temperature=0,
            http_client=http,
        )
        verdict = model.with_structured_output(Verdict, method="json_schema").invoke("Oslo?")
    assert isinstance(verdict, Verdict)
    assert seen == ["gemma"]
