"""``POST /v1/responses`` on the fallback kinds beyond Gemini and the ``openai`` (vLLM) backend:
``litellm`` (to the simulated vLLM), TGI's native API (the TGI simulator; it has no tool
calling) and the local backend on a tiny Gemma 4 that has learnt the tool loop. The official
``openai`` SDK drives each, whole and streamed; every body and event is checked against
OpenAI's schemas by the test server.

A text answer from each; the three-step tool loop (``get_weather``, ``get_time``, then text)
where the kind calls tools: the Responses request becomes the same internal request as chat's,
so the tiny Gemma sees the very prompt it was trained on.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.e2e.conftest import LOCAL_ANSWER
from tests.e2e.loop import CALLED, FUNCTIONS, QUESTION, responses_outputs
from tests.fixtures.gateway import GatewayServer

pytestmark = pytest.mark.filterwarnings(
    # litellm's own import, on the routes it serves
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)

MODES = pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])


def answer(client: openai.OpenAI, stream: bool, **request: Any) -> tuple[Any, str]:
    """The final response object, and the backend that answered (its header)."""
    if not stream:
        raw = client.responses.with_raw_response.create(**request)
        return raw.parse(), raw.headers["x-standby-backend"]
    raw_stream = client.responses.with_raw_response.create(stream=True, **request)
    events = list(raw_stream.parse())
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1]
    assert final.type == "response.completed", final
    assert deltas == final.response.output_text
    return final.response, raw_stream.headers["x-standby-backend"]


def tool_loop(client: openai.OpenAI, route: str, stream: bool) -> tuple[list[str], str, set[str]]:
    """The loop as an openai SDK user writes it: output items back as input, then a
    ``function_call_output`` per call. Returns the calls, the final text, who answered."""
    items: list[Any] = [{"role": "user", "content": QUESTION}]
    called: list[str] = []
    backends: set[str] = set()
    for _ in range(5):
        response, backend = answer(
            client, stream, model=route, input=items, tools=FUNCTIONS, temperature=0, store=False
        )
        backends.add(backend)
        step = responses_outputs(response, called)
        if not step:
            return called, response.output_text, backends
        items += step
    raise AssertionError("no final answer in 5 steps")


@MODES
@pytest.mark.parametrize(("route", "backend"), [("litellm", "litellm"), ("tgi-native", "tgi")])
def test_a_text_answer_from_litellm_and_tgi(
    route: str, backend: str, stream: bool, tools_gateway: GatewayServer
) -> None:
    response, answered = answer(
        tools_gateway.client(), stream, model=route, input="Say hello.", max_output_tokens=32
    )
    assert answered == backend
    assert response.status in ("completed", "incomplete")
    assert response.output_text.strip()
    assert response.usage is not None and response.usage.output_tokens > 0


@MODES
def test_litellm_completes_the_tool_loop(stream: bool, tools_gateway: GatewayServer) -> None:
    called, text, backends = tool_loop(tools_gateway.client(), "litellm", stream)
    assert called == CALLED
    assert text.strip()
    assert backends == {"litellm"}


def test_tgi_native_is_skipped_for_tools_with_a_400_naming_why(
    tools_gateway: GatewayServer,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        tools_gateway.client().responses.create(model="tgi-native", input=QUESTION, tools=FUNCTIONS)
    assert "tgi" in caught.value.message and "tool" in caught.value.message


@MODES
def test_the_local_gemma_completes_the_tool_loop(
    stream: bool, local_gateway: GatewayServer
) -> None:
    called, text, backends = tool_loop(local_gateway.client(), "local", stream)
    assert called == CALLED
    assert text == LOCAL_ANSWER  # the answer it learnt, to the same prompt
    assert backends == {"gemma"}
