"""local_tools on scripted model output: Gemma 4's call syntax read into JSON arguments, calls
checked against the request (function offered, tool_choice, schema), and the stream splitter
that holds a call back until it is complete and valid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from standby.chat_format import renders_tools, template_tools
from standby.errors import UpstreamProtocolError
from standby.protocol import ChatRequest, Delta, FinishReason, Message
from standby.providers.local_tools import (
    SyntaxProblem,
    ToolStream,
    check_call,
    forced_prefix,
    parse_call,
    tool_support,
)
from standby.tool_calls import Tool, ToolCallDelta, ToolChoice, whole_calls

Q = '<|"|>'
WEATHER = Tool(
    "get_weather",
    "The weather in a city now.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer", "minimum": 1},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
)
CLOCK = Tool("get_time")  # no parameters declared: any object
SPECIALS = ("<bos>", "<eos>", "<turn|>", "<|tool_call>", "<tool_call|>", Q)


def request(**kw: Any) -> ChatRequest:
    kw.setdefault("tools", (WEATHER, CLOCK))
    return ChatRequest(messages=(Message("user", "Weather in Paris?"),), **kw)


def call(body: str) -> str:
    return f"<|tool_call>{body}<tool_call|>"


@pytest.mark.parametrize(
    ("body", "arguments"),
    [
        (f"call:get_weather{{city:{Q}Paris{Q}}}", {"city": "Paris"}),
        ("call:get_time{}", {}),
        (
            f'call:f{{a:{Q}x, {{y}}: "z"{Q},b:-2.5e3,c:true,d:false,e:null,f:[1,{Q}2{Q},[]]}}',
            {"a": 'x, {y}: "z"', "b": -2500.0, "c": True, "d": False, "e": None, "f": [1, "2", []]},
        ),
        (
            f"call:f{{o:{{inner:{{deep:0}}}},{Q}quoted key{Q}:1}}",
            {"o": {"inner": {"deep": 0}}, "quoted key": 1},
        ),
        (f" call: f {{ x : 1 , y : [ {Q} {Q} ] }} ", {"x": 1, "y": [" "]}),
        (f"call:f{{s:{Q}line\nbreak <turn|> \\n{Q}}}", {"s": "line\nbreak <turn|> \\n"}),
    ],
)
def test_parse_call_reads_gemma4_arguments(body: str, arguments: dict[str, Any]) -> None:
    name, parsed = parse_call(body)
    assert name == body.split(":", 1)[1].split("{", 1)[0].strip()
    assert parsed == arguments


@pytest.mark.parametrize(
    "body",
    [
        "get_weather{}",  # no call: prefix
        "call:{}",  # no name
        f"call:f{{a:{Q}open}}",  # string not closed
        "call:f{a:1} and more",  # text after the arguments
        "call:f[1]",  # arguments not an object
        "call:f{a:1,a:2}",  # a key twice
        "call:f{a:yes}",  # a bare word that is no value
        'call:f{a:"json"}',  # JSON quotes are not Gemma 4's string syntax
        "call:f{a:1",  # object not closed
        "call:f{a:01}",  # not a number
    ],
)
def test_parse_call_refuses_anything_else(body: str) -> None:
    with pytest.raises(SyntaxProblem):
        parse_call(body)


def test_check_call_gives_json_arguments_and_fresh_ids() -> None:
    a = check_call("gemma", request(), "get_weather", {"city": "Zürich", "days": 2})
    b = check_call("gemma", request(), "get_weather", {"city": "Zürich", "days": 2})
    assert (a.name, json.loads(a.arguments)) == ("get_weather", {"city": "Zürich", "days": 2})
    assert "Zürich" in a.arguments  # not \\u-escaped
    assert a.id.startswith("call_") and len(a.id) > 16 and a.id != b.id
    assert check_call("gemma", request(), "get_time", {"anything": [1]}).name == "get_time"


@pytest.mark.parametrize(
    ("req", "name", "arguments", "problem"),
    [
        (request(), "get_wether", {"city": "Paris"}, "unknown function 'get_wether'"),
        (request(), "get_weather", {}, "'city' is a required property"),
        (request(), "get_weather", {"city": 3}, "3 is not of type 'string' (at city)"),
        (request(), "get_weather", {"city": "P", "days": 0}, "0 is less than the minimum of 1"),
        (request(), "get_weather", {"city": "P", "unit": "K"}, "'K' is not one of"),
        (request(), "get_weather", {"city": "P", "x": 1}, "Additional properties"),
        (request(tool_choice=ToolChoice("none")), "get_time", {}, "with tool_choice none"),
        (
            request(tool_choice=ToolChoice("required", "get_weather")),
            "get_time",
            {},
            "tool_choice requires 'get_weather'",
        ),
        (
            request(tools=(Tool("f", parameters={"type": "objekt"}),)),
            "f",
            {},
            "the declared schema is invalid",
        ),
    ],
)
def test_check_call_refuses_what_the_request_does_not_allow(
    req: ChatRequest, name: str, arguments: dict[str, Any], problem: str
) -> None:
    with pytest.raises(UpstreamProtocolError, match=r"^gemma: ") as e:
        check_call("gemma", req, name, arguments)
    assert problem in str(e.value)


def run(
    req: ChatRequest, pieces: list[str], reason: FinishReason = "stop"
) -> tuple[list[Delta], FinishReason]:
    stream = ToolStream("gemma", req, SPECIALS)
    out = [d for piece in [forced_prefix(req), *pieces] for d in stream.feed(piece)]
    tail, finish = stream.finish(reason)
    return out + tail, finish


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


def calls_of(deltas: list[Delta]) -> list[ToolCallDelta]:
    return [c for d in deltas for c in d.tool_calls]


OUTPUT = (
    "Let me look.<turn|>" + call(f"call:get_weather{{city:{Q}Paris{Q}}}") + call("call:get_time{}")
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(OUTPUT)])
def test_stream_splits_text_and_calls_in_any_pieces(size: int) -> None:
    pieces = [OUTPUT[i : i + size] for i in range(0, len(OUTPUT), size)]
    deltas, finish = run(request(), pieces)
    assert finish == "tool_calls"
    assert text_of(deltas) == "Let me look."  # special tokens dropped, as plain decoding does
    first, second = whole_calls(calls_of(deltas))
    assert (first.name, json.loads(first.arguments)) == ("get_weather", {"city": "Paris"})
    assert (second.name, second.arguments) == ("get_time", "{}")
    # Each call: one piece with id and name, then one with the arguments, nothing in between.
    pieces_of = [(c.index, c.id is not None, c.name, c.arguments) for c in calls_of(deltas)]
    assert pieces_of == [
        (0, True, "get_weather", ""),
        (0, False, None, first.arguments),
        (1, True, "get_time", ""),
        (1, False, None, "{}"),
    ]
    # No text is let out while a call may be starting: "<|tool_c" waits.
    stream = ToolStream("gemma", request(), SPECIALS)
    assert text_of(stream.feed("Hi <|tool_c")) == "Hi "
    assert stream.feed("all>call:get_time{") == []


def test_plain_text_answers_stay_text() -> None:
    deltas, finish = run(request(), ["It is ", "sunny <3 | >"])
    assert (text_of(deltas), finish, calls_of(deltas)) == ("It is sunny <3 | >", "stop", [])
    assert run(request(), ["cut"], "length")[1] == "length"


def test_a_forced_call_starts_with_the_call_tokens() -> None:
    named = request(tool_choice=ToolChoice("required", "get_weather"))
    assert forced_prefix(named) == "<|tool_call>call:get_weather{"
    deltas, finish = run(named, [f"city:{Q}Oslo{Q}}}<tool_call|>"])
    assert [c.name for c in whole_calls(calls_of(deltas))] == ["get_weather"]
    assert finish == "tool_calls"
    assert forced_prefix(request(tool_choice=ToolChoice("required"))) == "<|tool_call>call:"
    assert forced_prefix(request()) == forced_prefix(request(tool_choice=ToolChoice("none"))) == ""
    assert forced_prefix(request(tools=(), tool_choice=ToolChoice("required"))) == ""
    continuing = ChatRequest(
        messages=(Message("user", "Hi"), Message("assistant", "Par")),
        tools=(WEATHER,),
        tool_choice=ToolChoice("required"),
        continue_final=True,
    )
    assert forced_prefix(continuing) == ""


@pytest.mark.parametrize(
    ("req", "pieces", "reason", "problem"),
    [
        (request(), [call("call:get_weather{city:3")], "stop", "unreadable tool call"),
        (request(), [call("call:get_weather{city:3}")], "stop", "is not of type 'string'"),
        (request(), ["<|tool_call>call:get_weather{city:"], "length", "cut off at max_tokens"),
        (request(), ["<|tool_call>call:get_weather{city:"], "stop", "cut off (no closing token)"),
        (
            request(tool_choice=ToolChoice("required")),
            ["get_time{}<tool_call|>", "x"],
            "stop",
            None,
        ),
        (
            request(tool_choice=ToolChoice("required")),
            ["nothing<tool_call|>"],
            "stop",
            "unreadable",
        ),
        (request(tool_choice=ToolChoice("required", "get_time")), ["}<tool_call|>"], "stop", None),
        (
            request(tools=(WEATHER,), tool_choice=ToolChoice("required")),
            ["<tool_call|>"],
            "stop",
            "unreadable",
        ),
    ],
)
def test_a_bad_call_is_a_protocol_error_never_a_success(
    req: ChatRequest, pieces: list[str], reason: FinishReason, problem: str | None
) -> None:
    if problem is None:  # the good twin of a case below
        assert run(req, pieces, reason)[1] == "tool_calls"
        return
    with pytest.raises(UpstreamProtocolError) as e:
        run(req, pieces, reason)
    assert problem in str(e.value)


def test_required_without_a_call_fails() -> None:
    stream = ToolStream("gemma", request(tool_choice=ToolChoice("required")), SPECIALS)
    stream.feed("I would rather chat.")
    with pytest.raises(UpstreamProtocolError, match="tool_choice requires a call; none was made"):
        stream.finish("stop")


def test_tool_choice_none_declares_no_tools() -> None:
    assert template_tools(request(tool_choice=ToolChoice("none"))) is None
    assert template_tools(request(tools=())) is None
    named = template_tools(request(tool_choice=ToolChoice("required", "get_time")))
    assert named == template_tools(request()) == [WEATHER.openai(), CLOCK.openai()]


def test_tool_support_follows_the_chat_template(
    tiny_model_dir: Path, tiny_gemma4_dir: Path
) -> None:
    gemma3 = AutoTokenizer.from_pretrained(tiny_model_dir)
    gemma4 = AutoTokenizer.from_pretrained(tiny_gemma4_dir)
    assert not renders_tools(gemma3) and renders_tools(gemma4)
    assert tool_support(gemma4, "g4", renders_tools(gemma4)) is None
    reason = tool_support(gemma3, "google/gemma-3-1b-it", renders_tools(gemma3))
    assert reason == "the chat template of google/gemma-3-1b-it has no tool support"
    # A template that declares tools in a syntax other than Gemma 4's cannot be read back.
    assert "reads only Gemma 4's tool-call syntax" in str(tool_support(gemma3, "qwen", True))


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    deltas, finish = run(
        request(parallel_tool_calls=False), [call("call:get_time{}"), call("call:get_time{}")]
    )
    assert finish == "tool_calls"
    assert [c.name for c in whole_calls(calls_of(deltas))] == ["get_time"]
