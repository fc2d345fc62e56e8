"""A Responses request (``standby.responses_models``) as the internal ``ChatRequest`` every
provider receives: the same request the chat endpoint builds, so failover, admission, capture
and redaction see no difference between the two surfaces.

``instructions`` becomes the first system message; ``input`` a user message (a string) or the
conversation of its items: messages (``developer`` as ``system``), ``function_call`` items
folded into the assistant turn they follow, ``function_call_output`` items as ``tool`` turns;
``reasoning`` items (an earlier answer's thought summary, sent back) are checked and left out.
With ``previous_response_id`` the stored conversation's items (``responses_state``) come before
the request's own, read by the same rules.
What the gateway cannot serve is a 400 naming the field (``tools.0.type``, ``input.3.type``,
``background``...), never dropped in silence.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from standby.errors import RequestError, first_problem
from standby.media import Media, MediaError
from standby.openai_models import FileIn, FilePart, ImagePart, ImageUrl
from standby.protocol import ChatRequest, Message
from standby.responses_models import (
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputFile,
    InputImage,
    InputText,
    MessageItem,
    NamedFunction,
    OutputText,
    Part,
    ReasoningItem,
    Refusal,
    ResponsesRequest,
)
from standby.tool_calls import AUTO, Tool, ToolCall, ToolChoice

# Request fields the gateway refuses when set, and why.
_REFUSED = {
    "background": "background responses are not supported: send the request without it",
    "conversation": "conversation objects are not kept by this gateway: continue with "
    "previous_response_id, or send the whole conversation as input",
}


def input_items(req: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's own input as items (a string is one user message), as the client sent
    them: what a stored response keeps of its request."""
    if isinstance(req.input, str):
        return [{"type": "message", "role": "user", "content": req.input}]
    return req.input


def chat_request(req: ResponsesRequest, history: list[dict[str, Any]] | None = None) -> ChatRequest:
    """The ``ChatRequest`` for ``req`` after the items of ``history`` (a stored conversation,
    ``previous_response_id``), or a ``RequestError`` naming what cannot be served."""
    for field, why in _REFUSED.items():
        if getattr(req, field):
            raise RequestError(f"{field}: {why}", param=field, code="unsupported")
    tools = _tools(req.tools or [])
    fmt = req.text.format if req.text is not None else None
    return ChatRequest(
        messages=_messages(req, history or []),
        temperature=req.temperature,
        top_p=req.top_p,
        max_tokens=req.max_output_tokens,
        response_format=fmt.response_format() if fmt is not None else None,
        tools=tools,
        tool_choice=_tool_choice(req.tool_choice, tools),
        parallel_tool_calls=req.parallel_tool_calls,
        reasoning_effort=req.reasoning.effort if req.reasoning is not None else None,
        service_tier=req.service_tier,
        thought_summaries=req.reasoning is not None and req.reasoning.summarized() is not None,
    )


M = TypeVar("M", bound=BaseModel)


def _parsed(model: type[M], raw: Any, *where: str) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        problem = first_problem(e, *where)
        raise RequestError(problem.line(), param=problem.loc) from None


def _tools(raw: list[dict[str, Any]]) -> tuple[Tool, ...]:
    tools: list[Tool] = []
    for i, item in enumerate(raw):
        kind = item.get("type")
        if kind != "function":
            raise RequestError(
                f"tools.{i}.type: {kind!r} tools are not supported by this gateway (built-in "
                "tools run on OpenAI's servers); only function tools are",
                param=f"tools.{i}.type",
                code="unsupported",
            )
        f = _parsed(FunctionTool, item, "tools", str(i))
        if any(t.name == f.name for t in tools):
            raise RequestError(
                f"tools.{i}.name: {f.name!r} is the name of an earlier tool (names must be unique)",
                param=f"tools.{i}.name",
            )
        tools.append(Tool(f.name, f.description, f.parameters, f.strict))
    return tuple(tools)


def _tool_choice(choice: str | NamedFunction | None, tools: tuple[Tool, ...]) -> ToolChoice:
    if isinstance(choice, NamedFunction):
        if all(t.name != choice.name for t in tools):
            raise RequestError(
                f"tool_choice names the function {choice.name!r}, which is not among tools",
                param="tool_choice",
            )
        return ToolChoice("required", choice.name)
    if choice == "required" and not tools:
        raise RequestError("tool_choice is required but no tools were given", param="tool_choice")
    if choice == "none":
        return ToolChoice("none")
    if choice == "required":
        return ToolChoice("required")
    return AUTO


def _messages(req: ResponsesRequest, history: list[dict[str, Any]]) -> tuple[Message, ...]:
    out: list[Message] = []
    if req.instructions:
        out.append(Message("system", req.instructions))
    if isinstance(req.input, str) and not history:
        out.append(Message("user", req.input))
        return tuple(out)
    called: dict[str, str] = {}  # call_id -> function name, of the calls so far
    joinable = False  # the last message is an assistant turn a function_call may join
    first = len(history)  # the index of the request's own first item
    for i, raw in enumerate([*history, *input_items(req)]):
        kind = raw.get("type", "message" if "role" in raw else None)
        where = f"input.{i - first}" if i >= first else "previous_response_id"
        if kind == "message":
            m = _parsed(MessageItem, raw, *where.split("."))
            out.append(_message(m, where))
            joinable = m.role == "assistant"
        elif kind == "function_call":
            c = _parsed(FunctionCallItem, raw, *where.split("."))
            if c.call_id in called:
                raise RequestError(
                    f"{where}.call_id: {c.call_id!r} is the id of an earlier call (each call "
                    "needs its own, so its result can be matched to it)",
                    param=f"{where}.call_id",
                )
            called[c.call_id] = c.name
            call = ToolCall(c.call_id, c.name, c.arguments, c.signature())
            if joinable:
                last = out[-1]
                out[-1] = Message("assistant", last.content, tool_calls=(*last.tool_calls, call))
            else:
                out.append(Message("assistant", "", tool_calls=(call,)))
            joinable = True
        elif kind == "function_call_output":
            r = _parsed(FunctionCallOutputItem, raw, *where.split("."))
            name = called.get(r.call_id)
            if name is None:
                raise RequestError(
                    f"{where}.call_id: no earlier function_call item has the call_id {r.call_id!r}",
                    param=f"{where}.call_id",
                )
            text = r.output if isinstance(r.output, str) else _text(r.output, f"{where}.output")
            out.append(Message("tool", text, tool_call_id=r.call_id, name=name))
            joinable = False
        elif kind == "reasoning":
            # A summary of thinking already done: no backend reads it back (Gemini's is in the
            # calls' thought signatures), and it does not end the assistant turn it is in.
            _parsed(ReasoningItem, raw, *where.split("."))
        else:
            raise RequestError(
                f"{where}.type: input items of type {kind!r} are not supported by this gateway "
                "(messages, function_call, function_call_output and reasoning are)",
                param=f"{where}.type",
                code="unsupported",
            )
    return tuple(out)


def _message(m: MessageItem, where: str) -> Message:
    role = "system" if m.role == "developer" else m.role
    if isinstance(m.content, str):
        return Message(role, m.content)
    if role != "user":
        return Message(role, _text(m.content, f"{where}.content"))
    parts: list[str | Media] = []
    for j, p in enumerate(m.content):
        if isinstance(p, InputText | OutputText):
            parts.append(p.text)
        elif isinstance(p, Refusal):
            parts.append(p.refusal)
        else:
            parts.append(_media(p, f"{where}.content.{j}"))
    text = "".join(p for p in parts if isinstance(p, str))
    if all(isinstance(p, str) for p in parts):
        return Message("user", text)
    return Message("user", text, parts=tuple(parts))


def _text(parts: list[Part], where: str) -> str:
    """The text of parts that may only be text (an assistant or system turn, a result)."""
    out: list[str] = []
    for j, p in enumerate(parts):
        if isinstance(p, InputText | OutputText):
            out.append(p.text)
        elif isinstance(p, Refusal):
            out.append(p.refusal)
        else:
            raise RequestError(
                f"{where}.{j}: {p.type} parts are only read in user messages",
                param=f"{where}.{j}",
            )
    return "".join(out)


def _media(p: InputImage | InputFile, where: str) -> Media:
    """An image or file part as ``Media`` (an image URL is fetched later, by the gateway), read
    by the same code as chat's ``image_url`` and ``file`` parts."""
    try:
        if isinstance(p, InputImage):
            if p.image_url is None:
                raise MediaError(
                    "needs image_url (uploaded files, file_id, are not kept by this gateway)"
                )
            detail = p.detail if p.detail != "original" else "high"
            return ImagePart(
                type="image_url", image_url=ImageUrl(url=p.image_url, detail=detail)
            ).media()
        if p.file_data is None:
            raise MediaError("needs file_data (file_id and file_url are not read by this gateway)")
        return FilePart(
            type="file", file=FileIn(filename=p.filename, file_data=p.file_data)
        ).media()
    except MediaError as e:
        raise RequestError(f"{where}: the {p.type} part {e}", param=where) from None
    except ValidationError as e:
        problem = first_problem(e)
        raise RequestError(f"{where}: the {p.type} part: {problem.msg}", param=where) from None
