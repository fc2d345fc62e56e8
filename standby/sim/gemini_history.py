"""Tools and tool-call history as the SIMULATED Gemini reads them from a request, on either
surface: the declared functions, the calling mode, and where the current turn stands (which
functions have answered, whether the request ends with their responses, whether a step lacks
its thought signature). Requests Gemini refuses raise BadRequest with Gemini's message."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, NamedTuple

import orjson

from standby.sim.answers import SimRequest, SimTool
from standby.sim.gemini_tools import corrupted_signature, genuine, is_base64, missing_signature
from standby.sim.surface import BadRequest, get_field

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
_MODES = {
    **{"MODE_UNSPECIFIED": "AUTO", "AUTO": "AUTO", "ANY": "ANY"},
    **{"NONE": "NONE", "VALIDATED": "VALIDATED"},
}
_COUNT = (
    "Please ensure that the number of function response parts is equal to the number of "
    "function call parts of the function call turn."
)


class Tooling(NamedTuple):
    """What a request declares and where its tool calls stand (fields of ``SimRequest``)."""

    tools: tuple[SimTool, ...] = ()
    mode: str = "AUTO"
    allowed: tuple[str, ...] = ()
    answered: tuple[str, ...] = ()
    results_last: bool = False
    unsigned: str | None = None


def with_tooling(
    req: SimRequest, declared: tuple[tuple[SimTool, ...], str, tuple[str, ...]], history: Tooling
) -> SimRequest:
    """``req`` with the ``declared`` tools, mode and allowed names (``native_tools`` or
    ``openai_tools``) and where the ``history``'s calls stand."""
    tools, mode, allowed = declared
    return replace(
        req,
        tools=tools,
        tool_mode=mode,
        allowed=allowed,
        answered=history.answered,
        results_last=history.results_last,
        unsigned=history.unsigned,
    )


def _tool(name: Any, schema: Any, where: str) -> SimTool:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadRequest(
            f"* {where}.name: Invalid function name. Must start with a letter or an underscore. "
            "Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes "
            "(-), with a maximum length of 128."
        )
    if schema is not None and not isinstance(schema, dict):
        raise BadRequest(f"* {where}.parameters: must be an object schema")
    return SimTool(name, orjson.dumps(schema).decode() if schema else "")


def _checked(tools: list[SimTool], mode: str, allowed: Any) -> tuple[str, tuple[str, ...]]:
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise BadRequest("Duplicate function declaration names are not allowed.")
    if allowed is None:
        allowed = []
    if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
        raise BadRequest("allowed_function_names must be a list of strings")
    if allowed and mode not in ("ANY", "VALIDATED"):
        raise BadRequest("allowed_function_names should only be set when the mode is ANY.")
    unknown = [a for a in allowed if a not in names]
    if unknown:
        raise BadRequest(f"allowed_function_names {unknown} are not in function_declarations.")
    if mode in ("ANY", "VALIDATED") and not tools:
        raise BadRequest("Function calling config mode ANY needs function_declarations.")
    return mode, tuple(allowed)


def native_tools(data: dict[str, Any]) -> tuple[tuple[SimTool, ...], str, tuple[str, ...]]:
    """``tools[].functionDeclarations`` and ``toolConfig.functionCallingConfig``."""
    raw = data.get("tools") or []
    if not isinstance(raw, list):
        raise BadRequest("tools must be a list of Tool objects")
    tools: list[SimTool] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools[{i}] must be an object")
        decls = get_field(tool, "functionDeclarations", "function_declarations") or []
        if not isinstance(decls, list):
            raise BadRequest(f"tools[{i}].function_declarations must be a list")
        for j, d in enumerate(decls):
            where = f"tools[{i}].function_declarations[{j}]"
            if not isinstance(d, dict):
                raise BadRequest(f"{where} must be an object")
            plain = d.get("parameters")
            schema = get_field(d, "parametersJsonSchema", "parameters_json_schema")
            if plain is not None and schema is not None:
                raise BadRequest(f"* {where}: parameters and parameters_json_schema are exclusive")
            tools.append(_tool(d.get("name"), schema if plain is None else plain, where))
    config = get_field(data, "toolConfig", "tool_config") or {}
    if not isinstance(config, dict):
        raise BadRequest("tool_config must be an object")
    calling = get_field(config, "functionCallingConfig", "function_calling_config") or {}
    if not isinstance(calling, dict):
        raise BadRequest("tool_config.function_calling_config must be an object")
    raw_mode = calling.get("mode") or "AUTO"
    mode = _MODES.get(raw_mode) if isinstance(raw_mode, str) else None
    if mode is None:
        raise BadRequest(
            f"Invalid value at 'tool_config.function_calling_config.mode': {calling.get('mode')!r}"
        )
    allowed = get_field(calling, "allowedFunctionNames", "allowed_function_names")
    return (tuple(tools), *_checked(tools, mode, allowed))


def _signature(part: dict[str, Any], where: str) -> str | None:
    value = get_field(part, "thoughtSignature", "thought_signature")
    if value is not None and (not isinstance(value, str) or not is_base64(value)):
        raise BadRequest(
            f"Invalid value at '{where}.thought_signature' (TYPE_BYTES), Base64 decoding failed"
        )
    return value or None


def _refusal(name: str, position: int, signature: str | None) -> str | None:
    """Why Gemini 3 refuses a current-turn step whose first call has ``signature``."""
    if signature is None:
        return missing_signature(name, position)
    return None if genuine(signature) else corrupted_signature(position)


def native_history(contents: list[dict[str, Any]]) -> Tooling:
    """Function calls and responses in ``contents`` (already checked to be lists of objects)."""
    start, previous_calls, results_last = -1, 0, False
    steps: list[tuple[int, str, str | None]] = []  # content, first call's name and signature
    answered: list[tuple[int, str]] = []
    for i, content in enumerate(contents):
        model = content.get("role") == "model"
        calls = responses = 0
        for j, part in enumerate(content["parts"]):
            signature = _signature(part, f"contents[{i}].parts[{j}]")
            call = get_field(part, "functionCall", "function_call")
            response = get_field(part, "functionResponse", "function_response")
            if call is not None:
                if not model or not isinstance(call, dict) or not isinstance(call.get("name"), str):
                    raise BadRequest(f"contents[{i}].parts[{j}].function_call is not valid here")
                if call.get("args") is not None and not isinstance(call["args"], dict):
                    raise BadRequest(f"contents[{i}].parts[{j}].function_call.args: not an object")
                if not calls:
                    steps.append((i, call["name"], signature))
                calls += 1
            elif response is not None:
                if (
                    model
                    or not isinstance(response, dict)
                    or not isinstance(response.get("name"), str)
                ):
                    raise BadRequest(f"contents[{i}].parts[{j}].function_response is not valid")
                if not isinstance(response.get("response"), dict):
                    raise BadRequest(
                        f"contents[{i}].parts[{j}].function_response.response: must be an object"
                    )
                answered.append((i, response["name"]))
                responses += 1
        if responses and responses != previous_calls:
            raise BadRequest(_COUNT)
        results_last = not model and responses == len(content["parts"]) > 0
        if not model and not results_last:
            start = i  # a user message: the current turn begins
        previous_calls = calls if model else 0
    refusals = (_refusal(name, i, sig) for i, name, sig in steps if i > start)
    unsigned = next((r for r in refusals if r is not None), None)
    return Tooling(
        answered=tuple(n for i, n in answered if i > start),
        results_last=results_last,
        unsigned=unsigned,
    )


def openai_tools(data: dict[str, Any]) -> tuple[tuple[SimTool, ...], str, tuple[str, ...]]:
    """``tools`` and ``tool_choice`` of a chat-completions request, in Gemini's terms."""
    raw = data.get("tools") or []
    if not isinstance(raw, list):
        raise BadRequest("tools must be a list")
    tools = []
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function":
            raise BadRequest(f"tools[{i}] must be a function tool")
        tools.append(_tool(fn.get("name"), fn.get("parameters"), f"tools[{i}].function"))
    choice = data.get("tool_choice")
    allowed = None
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise BadRequest("tool_choice must name a function")
        mode, allowed = "ANY", [name]
    else:
        mode = {None: "AUTO", "auto": "AUTO", "none": "NONE", "required": "ANY"}.get(choice, "")
        if not mode:
            raise BadRequest("tool_choice must be none, auto, required or a named function")
    return (tuple(tools), *_checked(tools, mode, allowed))


def openai_history(messages: list[dict[str, Any]]) -> Tooling:
    """Assistant ``tool_calls`` (signatures in ``extra_content.google.thought_signature``) and
    ``tool`` messages of a chat-completions history."""
    start = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    names: dict[str, str] = {}
    answered: list[str] = []
    unsigned = None
    for i, m in enumerate(messages):
        calls = m.get("tool_calls") or []
        if not isinstance(calls, list):
            raise BadRequest(f"messages[{i}].tool_calls must be a list")
        for j, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise BadRequest(f"messages[{i}].tool_calls[{j}] must name a function")
            names[str(call.get("id"))] = fn["name"]
            extra = call.get("extra_content") or {}
            google = extra.get("google") if isinstance(extra, dict) else None
            if not isinstance(google, dict):
                google = {}
            signature = _signature(google, f"messages[{i}].tool_calls[{j}].extra_content.google")
            if j == 0 and i > start and unsigned is None:
                unsigned = _refusal(fn["name"], i, signature)
        if m.get("role") == "tool" and i > start:
            answered.append(names.get(str(m.get("tool_call_id")), ""))
    results_last = messages[-1].get("role") == "tool"
    return Tooling(answered=tuple(answered), results_last=results_last, unsigned=unsigned)
