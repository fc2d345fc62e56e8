"""The controls that reach Gemini, end to end with the openai SDK (every answer checked against
OpenAI's schemas by the gateway fixture): reasoning_effort and its usage details, a
conversation of system messages only (on Gemini and on the local fallback), logit_bias."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.fixtures.gateway import ROUTE, StartGateway, base_config
from tests.fixtures.sim import RunningSim

HELLO = [{"role": "user", "content": "Say hello to the gateway."}]
SYSTEM_ONLY = [{"role": "system", "content": "Greet the user in one short line."}]


def on_model(sim: RunningSim, model: str, tiny_model: Path | None = None, **gemini: Any) -> Any:
    config = base_config(sim.url, tiny_model)
    config["backends"]["gemini"].update(model=model, **gemini)
    return config


@pytest.mark.parametrize(
    ("model", "sent"),
    [
        ("gemini-3.8-flash", {"thinkingLevel": "HIGH"}),
        ("gemini-2.5-flash", {"thinkingBudget": 16384}),
    ],
)
def test_reasoning_effort_reaches_gemini_and_its_tokens_come_back(
    sim: RunningSim, start_gateway: StartGateway, model: str, sent: dict[str, Any]
) -> None:
    client = start_gateway(on_model(sim, model)).client()
    whole = client.chat.completions.create(model=ROUTE, messages=HELLO, reasoning_effort="high")
    assert orjson.loads(sim.sim.received[-1])["generationConfig"]["thinkingConfig"] == sent
    thoughts = 256  # the simulator's HIGH, and its thoughts for a 16384 budget
    assert whole.usage is not None and whole.usage.completion_tokens_details is not None
    assert whole.usage.completion_tokens_details.reasoning_tokens == thoughts
    chunks = list(
        client.chat.completions.create(
            model=ROUTE,
            messages=HELLO,
            reasoning_effort="high",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == thoughts
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_cached_tokens_come_back(sim: RunningSim, start_gateway: StartGateway) -> None:
    client = start_gateway(on_model(sim, "gemini-3.8-flash")).client()
    rules = " ".join(f"rule{i}" for i in range(100))
    messages = [{"role": "system", "content": rules}, *HELLO]
    whole = client.chat.completions.create(model=ROUTE, messages=messages)  # type: ignore[arg-type]
    assert whole.usage is not None and whole.usage.prompt_tokens_details is not None
    assert whole.usage.prompt_tokens_details.cached_tokens == 100


def test_the_backend_default_effort(sim: RunningSim, start_gateway: StartGateway) -> None:
    config = on_model(sim, "gemini-3.8-flash", reasoning_effort="low")
    start_gateway(config).client().chat.completions.create(model=ROUTE, messages=HELLO)
    body = orjson.loads(sim.sim.received[-1])
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "LOW"}


def test_a_system_only_conversation_is_answered_by_gemini(
    sim: RunningSim, start_gateway: StartGateway
) -> None:
    client = start_gateway(on_model(sim, "gemini-3.8-flash")).client()
    whole = client.chat.completions.create(model=ROUTE, messages=SYSTEM_ONLY)  # type: ignore[arg-type]
    assert whole.choices[0].message.content
    chunks = list(
        client.chat.completions.create(model=ROUTE, messages=SYSTEM_ONLY, stream=True)  # type: ignore[arg-type]
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content


def test_a_system_only_conversation_is_answered_by_the_local_fallback(
    sim: RunningSim, start_gateway: StartGateway, tiny_model_dir: Path
) -> None:
    gateway = start_gateway(on_model(sim, "gemini-3.8-flash", tiny_model_dir))
    sim.sim.set_fault("error-503")
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=ROUTE,
        messages=SYSTEM_ONLY,  # type: ignore[arg-type]
    )
    assert raw.headers["x-standby-backend"] == "gemma"
    assert raw.parse().choices[0].message.content


def test_logit_bias_on_a_route_that_cannot_honour_it_is_a_clear_400(
    sim: RunningSim, start_gateway: StartGateway
) -> None:
    client = start_gateway(on_model(sim, "gemini-3.8-flash")).client()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=ROUTE, messages=HELLO, logit_bias={"1234": -100})
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "unsupported"
    assert "logit_bias" in error["message"] and error["param"] == "logit_bias"
    assert sim.sim.requests == 0  # refused before any backend was asked
