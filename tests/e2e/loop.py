"""A three-step tool loop (the model calls ``get_weather``, reads its result, calls ``get_time``,
reads that, answers in text) driven through the clients applications use: the official
``openai`` SDK (sync, async, ``stream=True``, the ``.stream()`` helper), langchain-openai
(``bind_tools``) and an OpenAI Agents SDK agent on its chat-completions model.

Each driver runs the loop the way that client's users write it, with ``before(step)`` called
before each model call (a test takes Gemini down or brings it back there). Event hooks on the
client's own httpx client record every request body it sent and the ``x-standby-backend`` header
of every answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    RunContextWrapper,
    RunHooks,
    Runner,
    TResponseInputItem,
    function_tool,
)
from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

# "one at a time" makes the simulated vLLM call one tool per step (the simulated Gemini does so
# by its model name, -tool-chain); the local tiny model is trained on this exact loop.
QUESTION = "What is the weather in Paris, and the time there? Look them up one at a time."
RESULTS = {"get_weather": "Sunny, 21 degrees.", "get_time": "10:00"}
CALLED = ["get_weather", "get_time"]
MAX_STEPS = 5

# The tools as every client sends them: what the Agents SDK makes of the two @function_tools
# below (a test checks it), so the tiny local model sees the same prompt from every client.
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {
            "properties": {
                "city": {"description": "The city's name.", "title": "City", "type": "string"}
            },
            "required": ["city"],
            "title": "get_weather_args",
            "type": "object",
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a time zone.",
        "parameters": {
            "properties": {"zone": {"title": "Zone", "type": "string"}},
            "required": ["zone"],
            "title": "get_time_args",
            "type": "object",
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TOOLS: list[Any] = [WEATHER, TIME]
FUNCTIONS = [{"type": "function", **tool["function"]} for tool in TOOLS]  # Responses' shape


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city now.

    Args:
        city: The city's name.
    """
    return RESULTS["get_weather"]


@function_tool
def get_time(zone: str) -> str:
    """The local time in a time zone."""
    return RESULTS["get_time"]


AGENT_TOOLS = [get_weather, get_time]


class Forecast(BaseModel):
    """A weather forecast for a city."""

    city: str
    degrees: int


FORECAST_ASK = "Give the forecast for Paris."


@dataclass
class Session:
    """One loop against the gateway: its OpenAI base URL, the route (the request's ``model``),
    ``before(step)`` run before each model call; what the client sent (``sent``: the request
    bodies) and the ``x-standby-backend`` and ``x-standby-fallback-reason`` headers of each
    chat-completions answer it got."""

    base_url: str
    route: str
    before: Callable[[int], None] = lambda step: None
    sent: list[dict[str, Any]] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)
    reasons: list[str | None] = field(default_factory=list)

    def _request(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            self.sent.append(json.loads(request.content))

    def _response(self, response: httpx.Response) -> None:
        if response.request.url.path.endswith("/chat/completions"):
            self.backends.append(response.headers.get("x-standby-backend", "?"))
            self.reasons.append(response.headers.get("x-standby-fallback-reason"))

    async def _arequest(self, request: httpx.Request) -> None:
        self._request(request)

    async def _aresponse(self, response: httpx.Response) -> None:
        self._response(response)

    def http(self) -> httpx.Client:
        hooks = {"request": [self._request], "response": [self._response]}
        return httpx.Client(event_hooks=hooks, timeout=60)

    def async_http(self) -> httpx.AsyncClient:
        hooks = {"request": [self._arequest], "response": [self._aresponse]}
        return httpx.AsyncClient(event_hooks=hooks, timeout=60)

    def signed(self) -> list[bool]:
        """Per assistant message with calls in the last request's history: whether its first
        call went back with a thought signature (``extra_content.google.thought_signature``)."""
        firsts = [m["tool_calls"][0] for m in self.sent[-1]["messages"] if m.get("tool_calls")]
        return [
            bool(call.get("extra_content", {}).get("google", {}).get("thought_signature"))
            for call in firsts
        ]

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.base_url, api_key="unused", max_retries=0, http_client=self.http()
        )

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key="unused", max_retries=0, http_client=self.async_http()
        )


@dataclass
class Loop:
    """What a loop did: the functions called, in order, and the final text."""

    calls: list[str]
    text: str


def responses_outputs(response: Any, calls: list[str]) -> list[dict[str, Any]]:
    """A Responses answer's output items as input items for the next step, each function call
    followed by its output (its name added to ``calls``); empty when it called nothing."""
    called = [item for item in response.output if item.type == "function_call"]
    if not called:
        return []
    items = [item.model_dump(exclude_none=True) for item in response.output]
    for call in called:
        json.loads(call.arguments)  # whole JSON, as the client would read it
        calls.append(call.name)
        items.append(
            {"type": "function_call_output", "call_id": call.call_id, "output": RESULTS[call.name]}
        )
    return items


def _tool_messages(message: dict[str, Any], calls: list[str]) -> list[dict[str, Any]]:
    out = []
    for call in message["tool_calls"]:
        name = call["function"]["name"]
        json.loads(call["function"]["arguments"])  # whole JSON, as the client would read it
        calls.append(name)
        out.append({"role": "tool", "tool_call_id": call["id"], "content": RESULTS[name]})
    return out


class SDKLoop:
    """The history of an openai SDK loop: each answer's assistant message goes back as the
    client got it (``extra_content`` included), followed by the tool results."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.messages: list[Any] = [{"role": "user", "content": QUESTION}]
        self.loop = Loop([], "")

    def step(self, message: dict[str, Any]) -> Loop | None:
        """Take one answer: the finished loop when it is text, else None (results appended)."""
        if not message.get("tool_calls"):
            self.loop.text = message.get("content") or ""
            return self.loop
        self.messages += [message, *_tool_messages(message, self.loop.calls)]
        return None

    def request(self) -> dict[str, Any]:
        return {"model": self.session.route, "messages": self.messages, "tools": TOOLS}


def sdk_sync(session: Session) -> Loop:
    client, loop = session.client(), SDKLoop(session)
    with client:
        for step in range(MAX_STEPS):
            session.before(step)
            completion = client.chat.completions.create(**loop.request(), temperature=0)
            if done := loop.step(completion.choices[0].message.model_dump(exclude_none=True)):
                return done
    raise AssertionError(f"no final answer in {MAX_STEPS} steps")


async def sdk_async(session: Session) -> Loop:
    client, loop = session.async_client(), SDKLoop(session)
    async with client:
        for step in range(MAX_STEPS):
            session.before(step)
            completion = await client.chat.completions.create(**loop.request(), temperature=0)
            if done := loop.step(completion.choices[0].message.model_dump(exclude_none=True)):
                return done
    raise AssertionError(f"no final answer in {MAX_STEPS} steps")


def accumulate(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message a stream's deltas add up to, as a client keeps it: text joined,
    calls by ``index`` (the first piece's id, type, name and ``extra_content``, the arguments
    joined)."""
    text, calls = "", {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for piece in delta.get("tool_calls") or ():
                call = calls.setdefault(
                    piece["index"], {"type": "function", "function": {"name": "", "arguments": ""}}
                )
                for key in ("id", "extra_content"):
                    if key in piece:
                        call[key] = piece[key]
                function = piece.get("function") or {}
                call["function"]["name"] += function.get("name") or ""
                call["function"]["arguments"] += function.get("arguments") or ""
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message


def sdk_stream(session: Session) -> Loop:
    client, loop = session.client(), SDKLoop(session)
    with client:
        for step in range(MAX_STEPS):
            session.before(step)
            stream = client.chat.completions.create(**loop.request(), temperature=0, stream=True)
            with stream:
                chunks = [chunk.model_dump(exclude_none=True) for chunk in stream]
            if done := loop.step(accumulate(chunks)):
                return done
    raise AssertionError(f"no final answer in {MAX_STEPS} steps")


def sdk_stream_helper(session: Session) -> Loop:
    client, loop = session.client(), SDKLoop(session)
    with client:
        for step in range(MAX_STEPS):
            session.before(step)
            with client.chat.completions.stream(**loop.request(), temperature=0) as stream:
                for _event in stream:
                    pass
                completion = stream.get_final_completion()
            message = completion.choices[0].message.model_dump(exclude_none=True)
            message.pop("parsed", None)  # the helper's own field, not part of the protocol
            for call in message.get("tool_calls", ()):
                call["function"].pop("parsed_arguments", None)
            if done := loop.step(message):
                return done
    raise AssertionError(f"no final answer in {MAX_STEPS} steps")


def _chat_openai(session: Session, http: httpx.Client) -> ChatOpenAI:
    return ChatOpenAI(
        model=session.route,
        base_url=session.base_url,
        api_key="unused",  # type: ignore[arg-type]
        max_retries=0,
        temperature=0,
        http_client=http,
    )


def langchain_tools(session: Session) -> Loop:
    messages: list[BaseMessage] = [HumanMessage(QUESTION)]
    calls: list[str] = []
    with session.http() as http:
        model = _chat_openai(session, http).bind_tools(TOOLS)
        for step in range(MAX_STEPS):
            session.before(step)
            answer = model.invoke(messages)
            messages.append(answer)
            if not answer.tool_calls:  # type: ignore[attr-defined]
                assert isinstance(answer.content, str)
                return Loop(calls, answer.content)
            for call in answer.tool_calls:  # type: ignore[attr-defined]
                calls.append(call["name"])
                messages.append(ToolMessage(RESULTS[call["name"]], tool_call_id=call["id"]))
    raise AssertionError(f"no final answer in {MAX_STEPS} steps")


def langchain_structured(session: Session) -> Forecast:
    """``with_structured_output(Forecast, method="function_calling")``: one forced call."""
    with session.http() as http:
        model = _chat_openai(session, http)
        structured = model.with_structured_output(Forecast, method="function_calling")
        session.before(0)
        forecast = structured.invoke(FORECAST_ASK)
    assert isinstance(forecast, Forecast), forecast
    return forecast


class _Steps(RunHooks[Any]):
    def __init__(self, session: Session) -> None:
        self.session, self.step = session, 0

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        self.session.before(self.step)
        self.step += 1


def agent(client: openai.AsyncOpenAI, route: str) -> Agent[Any]:
    """An agent with the two function tools on the Agents SDK's chat-completions model."""
    return Agent(
        name="weather",
        model=OpenAIChatCompletionsModel(model=route, openai_client=client),
        tools=list(AGENT_TOOLS),
        model_settings=ModelSettings(temperature=0),
    )


async def agents_sdk(session: Session) -> Loop:
    async with session.async_client() as client:
        result = await Runner.run(
            agent(client, session.route), QUESTION, hooks=_Steps(session), max_turns=MAX_STEPS
        )
    calls = [
        item.raw_item.name  # type: ignore[union-attr]
        for item in result.new_items
        if item.type == "tool_call_item"
    ]
    assert isinstance(result.final_output, str)
    return Loop(calls, result.final_output)
