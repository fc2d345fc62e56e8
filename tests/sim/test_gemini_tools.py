"""Function calling on the simulated Gemini, seen through google-genai (whose types parse every
answer), the openai SDK on the OpenAI-compatible surface, and raw HTTP for what Gemini refuses:
calls by tool_config and by model name, parallel and streamed calls, thought parts and
signatures, the 400 for a missing signature (and the documented placeholder), and the
MALFORMED_FUNCTION_CALL fault."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import orjson
import pytest
from google import genai
from google.genai import errors, types

from tests.fixtures.sim import RunningSim

PROMPT = "What is the weather in Oslo?"
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="The weather in a city.",
    parameters_json_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "maximum": 7}},
        "required": ["city"],
    },
)
TIME = types.FunctionDeclaration(name="get_time", parameters_json_schema={"type": "object"})
TOOLS = [types.Tool(function_declarations=[WEATHER, TIME])]
ANY = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY"))
FLASH3 = "gemini-3-flash-preview"


def config(**kw: Any) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(tools=TOOLS, **kw)


def test_mode_any_calls_the_first_function_with_arguments_from_its_schema(
    client: genai.Client,
) -> None:
    r = client.models.generate_content(
        model="gemini-2.5-flash", contents=PROMPT, config=config(tool_config=ANY)
    )
    assert r.function_calls is not None
    [call] = r.function_calls
    assert (call.name, call.args) == (
        "get_weather",
        {"city": "What is the weather in Oslo?", "days": 7},
    )
    assert call.id is None  # 2.5 names give no ids; gemini-3 names do
    assert r.candidates is not None
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.candidates[0].content is not None
    assert r.candidates[0].content.parts is not None
    assert r.candidates[0].content.parts[0].thought_signature is None


def test_allowed_function_names_pick_the_function(client: genai.Client) -> None:
    allowed = types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(
            mode="ANY", allowed_function_names=["get_time"]
        )
    )
    r = client.models.generate_content(
        model=FLASH3, contents=PROMPT, config=config(tool_config=allowed)
    )
    assert [(c.name, c.args) for c in r.function_calls or ()] == [("get_time", {})]


def test_auto_and_none_answer_in_text_unless_the_model_name_asks(client: genai.Client) -> None:
    r = client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT, config=config())
    assert r.function_calls is None or r.function_calls == []
    assert r.text and r.text.startswith("Simulated Gemini answer to:")
    none = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="NONE"))
    r = client.models.generate_content(
        model="gemini-2.5-flash-tool-call", contents=PROMPT, config=config(tool_config=none)
    )
    assert not r.function_calls


def test_gemini_3_signs_the_first_of_parallel_calls_and_gives_ids(client: genai.Client) -> None:
    r = client.models.generate_content(
        model=f"{FLASH3}-tool-parallel", contents=PROMPT, config=config()
    )
    assert r.candidates is not None and r.candidates[0].content is not None
    parts = r.candidates[0].content.parts or []
    assert [p.function_call.name for p in parts if p.function_call] == ["get_weather", "get_time"]
    assert [p.thought_signature is not None for p in parts] == [True, False]
    assert all(p.function_call and p.function_call.id for p in parts)


def test_thought_parts_when_thoughts_are_asked_for(client: genai.Client) -> None:
    thinking = types.ThinkingConfig(include_thoughts=True)
    r = client.models.generate_content(
        model=FLASH3, contents=PROMPT, config=config(tool_config=ANY, thinking_config=thinking)
    )
    assert r.candidates is not None and r.candidates[0].content is not None
    parts = r.candidates[0].content.parts or []
    assert parts[0].thought is True and parts[0].text
    assert parts[1].function_call is not None and parts[1].thought_signature
    assert r.usage_metadata is not None and r.usage_metadata.thoughts_token_count


@pytest.mark.parametrize("model", [FLASH3, "gemini-2.5-flash"])
def test_a_streamed_thought_summary_comes_in_pieces_before_the_text(
    client: genai.Client, model: str
) -> None:
    """Google's rolling summaries: ``thought`` parts, one chunk each, then the answer; the
    same summary as the whole answer's one part. Not for a model that does not think."""
    thinking = types.ThinkingConfig(include_thoughts=True)
    ask = {"model": model, "contents": "Hello", "config": config(thinking_config=thinking)}
    chunks = list(client.models.generate_content_stream(**ask))  # type: ignore[arg-type]
    parts = [p for c in chunks if c.candidates for p in c.candidates[0].content.parts or ()]  # type: ignore[union-attr]
    kinds = [bool(p.thought) for p in parts]
    thoughts = kinds.index(False)
    assert thoughts > 1 and not any(kinds[thoughts:])
    whole = client.models.generate_content(**ask)  # type: ignore[arg-type]
    assert whole.candidates is not None and whole.candidates[0].content is not None
    first, *rest = whole.candidates[0].content.parts or []
    assert first.thought is True
    assert first.text == "".join(p.text or "" for p in parts[:thoughts])
    assert "".join(p.text or "" for p in rest) == "".join(p.text or "" for p in parts[thoughts:])
    plain = client.models.generate_content(
        model="gemini-2.0-flash", contents="Hello", config=config(thinking_config=thinking)
    )
    assert plain.candidates is not None and plain.candidates[0].content is not None
    assert not any(p.thought for p in plain.candidates[0].content.parts or [])


def test_streamed_calls_arrive_whole_one_chunk_each(client: genai.Client) -> None:
    chunks = list(
        client.models.generate_content_stream(
            model=f"{FLASH3}-tool-parallel", contents=PROMPT, config=config()
        )
    )
    calls = [c.function_calls for c in chunks]
    assert [[f.name for f in fc or ()] for fc in calls] == [["get_weather"], ["get_time"]]
    finishes = [c.candidates[0].finish_reason for c in chunks if c.candidates]
    assert finishes == [None, types.FinishReason.STOP]


def get_weather(city: str) -> dict[str, Any]:
    """The weather in a city."""
    return {"city": city, "temp": 3}


@pytest.mark.parametrize("model", [f"{FLASH3}-tool-call", "gemini-2.5-flash-tool-call"])
def test_the_sdk_runs_a_tool_loop_by_itself(client: genai.Client, model: str) -> None:
    """google-genai's automatic function calling: it runs the function, sends back the model's
    turn as it came (signature included) and the result, and gets the text answer."""
    r = client.models.generate_content(
        model=model, contents=PROMPT, config=types.GenerateContentConfig(tools=[get_weather])
    )
    assert r.text and r.text.startswith("Simulated Gemini answer to: What is the weather in Oslo?")
    history = r.automatic_function_calling_history or []
    assert [c.role for c in history] == ["user", "model", "user"]


def _contents(signature: bytes | None, *, calls: int = 1) -> list[types.Content]:
    parts = [
        types.Part(
            function_call=types.FunctionCall(name="get_time", args={}),
            thought_signature=signature if i == 0 else None,
        )
        for i in range(calls)
    ]
    results = [
        types.Part.from_function_response(name="get_time", response={"time": "noon"})
    ] * calls
    return [
        types.Content(role="user", parts=[types.Part(text=PROMPT)]),
        types.Content(role="model", parts=parts),
        types.Content(role="user", parts=results),
    ]


@pytest.mark.parametrize(
    "signature", [b"skip_thought_signature_validator", b"context_engineering_is_the_way_to_go"]
)
def test_googles_placeholders_are_accepted(client: genai.Client, signature: bytes) -> None:
    r = client.models.generate_content(
        model=FLASH3, contents=_contents(signature, calls=2), config=config()
    )
    assert r.text


def test_a_signature_gemini_did_not_give_is_a_400_on_gemini_3(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(
            model=FLASH3, contents=_contents(b"made up by a client"), config=config()
        )
    assert info.value.code == 400
    assert "Corrupted thought signature" in str(info.value.message)


def test_a_missing_signature_in_the_current_turn_is_a_400_on_gemini_3(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=FLASH3, contents=_contents(None), config=config())
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    assert "Function call is missing a thought_signature in functionCall parts" in str(
        info.value.message
    )
    assert "default_api:get_time" in str(info.value.message)
    r = client.models.generate_content(
        model="gemini-2.5-flash", contents=_contents(None), config=config()
    )
    assert r.text  # 2.5 does not validate


def test_earlier_turns_are_not_validated(client: genai.Client) -> None:
    later = [
        types.Content(role="model", parts=[types.Part(text="It is noon.")]),
        types.Content(role="user", parts=[types.Part(text="Thanks!")]),
    ]
    r = client.models.generate_content(
        model=FLASH3, contents=[*_contents(None), *later], config=config()
    )
    assert r.text


async def post(sim: RunningSim, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(sim.url + path, data=orjson.dumps(body)) as r:
        return r.status, await r.json()


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        (
            [
                {"role": "user", "parts": [{"text": "hi"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f"}}] * 2},
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]},
            ],
            "the number of function response parts is equal to the number of function call parts",
        ),
        (
            [
                {
                    "role": "model",
                    "parts": [{"functionCall": {"name": "f"}, "thoughtSignature": "%%"}],
                }
            ],
            "Base64 decoding failed",
        ),
    ],
)
async def test_histories_gemini_refuses(sim: RunningSim, contents: list[Any], message: str) -> None:
    status, body = await post(
        sim, "/v1beta/models/gemini-2.5-flash:generateContent", {"contents": contents}
    )
    assert status == 400
    assert message in body["error"]["message"]


@pytest.mark.parametrize(
    "tools",
    [
        {"tools": [{"functionDeclarations": [{"name": "9lives"}]}]},
        {"tools": [{"functionDeclarations": [{"name": "f"}, {"name": "f"}]}]},
        {"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}},
        {"toolConfig": "ANY"},
        {"toolConfig": {"functionCallingConfig": {"mode": ["ANY"]}}},
        {
            "tools": [{"functionDeclarations": [{"name": "f"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["g"]}},
        },
    ],
)
async def test_declarations_gemini_refuses(sim: RunningSim, tools: dict[str, Any]) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], **tools}
    status, _ = await post(sim, "/v1beta/models/gemini-2.5-flash:generateContent", body)
    assert status == 400


def test_malformed_function_call_fault(client: genai.Client) -> None:
    r = client.models.generate_content(model="malformed-call", contents=PROMPT, config=config())
    assert r.candidates is not None
    assert r.candidates[0].finish_reason == types.FinishReason.MALFORMED_FUNCTION_CALL
    assert r.candidates[0].content is None


# --- the OpenAI-compatible surface ------------------------------------------------------------

OPENAI_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": WEATHER.parameters_json_schema},
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]


def _openai(sim: RunningSim) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{sim.url}/v1beta/openai/", api_key="k", max_retries=0)


async def test_openai_surface_answers_calls_with_google_signatures(sim: RunningSim) -> None:
    ask: list[Any] = [{"role": "user", "content": PROMPT}]
    async with _openai(sim) as client:
        r = await client.chat.completions.create(
            model=f"{FLASH3}-tool-parallel", messages=ask, tools=OPENAI_TOOLS
        )
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls or []
        assert [c.function.name for c in calls] == ["get_weather", "get_time"]  # type: ignore[union-attr]
        raw = [c.model_dump() for c in calls]
        assert raw[0]["extra_content"]["google"]["thought_signature"]
        assert "extra_content" not in raw[1]
        results = [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in raw]
        follow = [*ask, {"role": "assistant", "content": None, "tool_calls": raw}, *results]
        r = await client.chat.completions.create(
            model=f"{FLASH3}-tool-parallel", messages=follow, tools=OPENAI_TOOLS
        )
        assert r.choices[0].finish_reason == "stop"
        del raw[0]["extra_content"]
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model=FLASH3, messages=follow, tools=OPENAI_TOOLS)
        assert "thought_signature" in str(info.value)


async def test_openai_surface_streams_each_call_whole(sim: RunningSim) -> None:
    async with _openai(sim) as client:
        stream = await client.chat.completions.create(
            model=FLASH3,
            messages=[{"role": "user", "content": PROMPT}],
            tools=OPENAI_TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            stream=True,
        )
        chunks = [c async for c in stream]
    deltas = [c.choices[0].delta for c in chunks]
    assert deltas[0].role == "assistant"
    [call] = deltas[0].tool_calls or []
    assert (
        call.index,
        call.function and call.function.name,
        call.function and call.function.arguments,
    ) == (0, "get_time", "{}")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
