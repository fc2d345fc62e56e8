"""OpenAI chat-completions protocol: the normalized request providers receive (read from the
client's request, ``standby.openai_models``), and the response / chunk / error bodies the
gateway writes.

Responses are built as plain dicts and serialized with orjson: they are on the hot path and
their shape is fixed, so a pydantic round-trip would only cost CPU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from standby.capabilities import Need, needs_of
from standby.errors import RequestError
from standby.media import Media
from standby.openai_models import (
    ChatCompletionRequest,
    ChatMessageIn,
    NamedToolChoice,
    PartError,
    ReasoningEffort,
)
from standby.tool_calls import AUTO, Tool, ToolCall, ToolCallDelta, ToolChoice, whole_calls


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. An assistant turn may carry ``tool_calls``; a ``tool`` turn answers the call
    ``tool_call_id`` of function ``name`` (resolved from the history when the request is read)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    # A user turn with media: its content in order (text as str); empty for text only, when
    # ``content`` is all of it. ``content`` is then the text parts joined.
    parts: tuple[str | Media, ...] = ()

    @property
    def media(self) -> tuple[Media, ...]:
        return tuple(p for p in self.parts if isinstance(p, Media))


def _messages(raw: list[ChatMessageIn]) -> tuple[Message, ...]:
    """The normalized history; a tool message must answer a call made earlier in it."""
    called: dict[str, str] = {}
    out: list[Message] = []
    for i, m in enumerate(raw):
        if m.role == "tool":
            call_id = m.tool_call_id or ""
            name = called.get(call_id)
            if name is None:
                raise RequestError(
                    f"messages.{i}.tool_call_id: no earlier assistant message has a tool call "
                    f"with id {call_id!r}",
                    param=f"messages.{i}.tool_call_id",
                )
            out.append(Message("tool", m.text(), tool_call_id=call_id, name=name))
            continue
        calls = tuple(
            ToolCall(c.id, c.function.name, c.function.arguments, c.signature())
            for c in m.tool_calls or ()
        )
        for j, c in enumerate(calls):
            if c.id in called:
                raise RequestError(
                    f"messages.{i}.tool_calls.{j}.id: {c.id!r} is the id of an earlier call "
                    "(each call needs its own, so its result can be matched to it)",
                    param=f"messages.{i}.tool_calls.{j}.id",
                )
            called[c.id] = c.name
        role = "system" if m.role == "developer" else m.role
        try:
            parts = m.parts()
        except PartError as e:
            where = f"messages.{i}.content.{e.index}"
            raise RequestError(f"{where}: the {e.kind} part {e.problem}", param=where) from None
        out.append(Message(role, m.text(), tool_calls=calls, parts=parts))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The normalized request every provider receives.

    ``continue_final`` means the last message is a partial assistant answer that the backend
    must continue (mid-stream failover), not a finished turn.
    """

    messages: tuple[Message, ...]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    continue_final: bool = False
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = AUTO
    parallel_tool_calls: bool | None = None
    n: int = 1
    reasoning_effort: ReasoningEffort | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[int, int] | None = None
    service_tier: str | None = None
    # Whether the answer should carry the model's thought summaries (``Completion.reasoning``):
    # asked by the Responses API's ``reasoning.summary``, never by chat (whose schema has no
    # field for them). Not a sampling parameter: neither sent to OpenAI-style backends nor
    # captured (``params``).
    thought_summaries: bool = False

    @classmethod
    def from_openai(cls, req: ChatCompletionRequest) -> ChatRequest:
        messages = _messages(req.messages)
        stop: tuple[str, ...] = ()
        if isinstance(req.stop, str):
            stop = (req.stop,)
        elif req.stop:
            stop = tuple(req.stop)
        fmt = req.response_format.model_dump(by_alias=True) if req.response_format else None
        return cls(
            messages=messages,
            temperature=req.temperature,
            top_p=req.top_p,
            max_tokens=req.max_completion_tokens or req.max_tokens,
            stop=stop,
            seed=req.seed,
            response_format=fmt if fmt and fmt["type"] != "text" else None,
            tools=tuple(
                Tool(f.name, f.description, f.parameters, f.strict)
                for f in (t.function for t in req.tools or ())
            ),
            tool_choice=_tool_choice(req.tool_choice),
            parallel_tool_calls=req.parallel_tool_calls,
            n=req.n or 1,
            reasoning_effort=req.reasoning_effort,
            logprobs=bool(req.logprobs),
            top_logprobs=req.top_logprobs if req.logprobs else None,
            presence_penalty=req.presence_penalty or None,
            frequency_penalty=req.frequency_penalty or None,
            logit_bias={int(k): v for k, v in req.logit_bias.items()} if req.logit_bias else None,
            service_tier=req.service_tier,
        )

    @property
    def uses_tools(self) -> bool:
        """Tools offered, or tool calls and results in the history: only a backend that can do
        tools can answer it."""
        return bool(self.tools) or any(m.tool_calls or m.role == "tool" for m in self.messages)

    @property
    def media(self) -> tuple[Media, ...]:
        """Every image, audio clip and file of the conversation, in order."""
        return tuple(x for m in self.messages if m.parts for x in m.media)

    def needs(self) -> frozenset[Need]:
        """What a backend must be able to do to answer this request (``capabilities``)."""
        return needs_of(self)

    def params(self) -> dict[str, Any]:
        """The sampling parameters that were set, under their OpenAI names (what OpenAI-style
        backends receive, and what capture records)."""
        values = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "response_format": self.response_format,
            "stop": list(self.stop) or None,
            "n": self.n if self.n != 1 else None,
            "reasoning_effort": self.reasoning_effort,
            "logprobs": self.logprobs or None,
            "top_logprobs": self.top_logprobs,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "logit_bias": {str(k): v for k, v in self.logit_bias.items()}
            if self.logit_bias
            else None,
            "service_tier": self.service_tier,
        }
        return {k: v for k, v in values.items() if v is not None}

    def continued(self, partial: str) -> ChatRequest:
        """The same request, asking the next backend to continue ``partial`` (without thought
        summaries: the answer has begun, and its thoughts came before it)."""
        if self.continue_final:
            head, last = self.messages[:-1], self.messages[-1]
            messages = (*head, Message("assistant", last.content + partial))
        else:
            messages = (*self.messages, Message("assistant", partial))
        return replace(self, messages=messages, continue_final=True, thought_summaries=False)


def _tool_choice(choice: str | NamedToolChoice | None) -> ToolChoice:
    if isinstance(choice, NamedToolChoice):
        return ToolChoice("required", choice.function.name)
    if choice == "none":
        return ToolChoice("none")
    if choice == "required":
        return ToolChoice("required")
    return AUTO


@dataclass(slots=True)
class Usage:
    """Token counts. ``completion_tokens`` includes ``reasoning_tokens`` (as in OpenAI's
    usage); ``prompt_tokens`` includes ``cached_tokens``. The details are None where the
    backend does not report them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None

    @classmethod
    def from_openai(cls, raw: Mapping[str, Any]) -> Usage:
        """OpenAI's ``usage`` object as a server (or litellm) reports it, with
        ``completion_tokens_details.reasoning_tokens`` and
        ``prompt_tokens_details.cached_tokens`` where it gives them."""
        completion = raw.get("completion_tokens_details")
        prompt = raw.get("prompt_tokens_details")
        reasoning = completion.get("reasoning_tokens") if isinstance(completion, dict) else None
        cached = prompt.get("cached_tokens") if isinstance(prompt, dict) else None
        return cls(
            prompt_tokens=int(raw.get("prompt_tokens") or 0),
            completion_tokens=int(raw.get("completion_tokens") or 0),
            reasoning_tokens=reasoning if isinstance(reasoning, int) else None,
            cached_tokens=cached if isinstance(cached, int) else None,
        )

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.reasoning_tokens is not None:
            body["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        if self.cached_tokens is not None:
            body["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return body


# Why an answer ended, the same words in responses and in captured events.
FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


@dataclass(slots=True)
class Completion:
    """A whole answer from one backend."""

    text: str
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    model_version: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    # OpenAI's ``choices[].logprobs.content`` items, when the request asked for logprobs.
    logprobs: list[dict[str, Any]] | None = None
    # Choices 1..n-1 when the request asked for n > 1 (this one is choice 0; their usage is
    # counted in this one's).
    alternatives: tuple[Completion, ...] = ()
    # The model's thought summary, when the request asked for it (``thought_summaries``) and
    # the backend gave one (Gemini's ``thought`` parts); never part of ``text``.
    reasoning: str = ""


@dataclass(slots=True)
class Delta:
    """One streamed piece of an answer. The last delta of a stream carries ``finish_reason``
    and, where the backend reports them, ``usage`` and ``model_version``."""

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    model_version: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    logprobs: list[dict[str, Any]] | None = None
    # Which choice this piece belongs to (n > 1); the stream ends when every choice has
    # finished, the last piece carrying the usage.
    index: int = 0
    # A piece of the thought summary (``Completion.reasoning``); content for the stream's
    # first-piece and idle rules, as text is.
    reasoning: str = ""


class _Choice:
    """What the deltas of one choice have said so far."""

    __slots__ = ("calls", "finish", "logprobs", "texts", "thoughts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.thoughts: list[str] = []
        self.calls: list[ToolCallDelta] = []
        self.logprobs: list[dict[str, Any]] = []
        self.finish: FinishReason | None = None


class Assembly:
    """A stream's deltas added up into the whole answer they make (the one reader of deltas
    into a ``Completion``): each choice's text and thought summary, its tool-call pieces as
    whole calls (``whole_calls``), its logprobs and finish reason; the request's usage and
    model version from the deltas that carry them (the last one, by the stream contract).
    ``add`` says when every one of the ``n`` choices has finished; a delta of a choice
    beyond ``n`` is the caller's to refuse before ``add``. Logprobs are kept when
    ``logprobs`` (the request asked for them): a choice's items, an empty list when it has
    none."""

    __slots__ = ("_choices", "_finished", "logprobs", "model_version", "n", "usage")

    def __init__(self, n: int = 1, *, logprobs: bool = False) -> None:
        self.n = n
        self.logprobs = logprobs
        self.usage: Usage | None = None
        self.model_version: str | None = None
        self._choices = [_Choice() for _ in range(n)]
        self._finished = 0

    def add(self, delta: Delta) -> bool:
        """Take one delta; True once every choice has its finish reason."""
        choice = self._choices[delta.index]
        if delta.text:
            choice.texts.append(delta.text)
        if delta.reasoning:
            choice.thoughts.append(delta.reasoning)
        if delta.tool_calls:
            choice.calls.extend(delta.tool_calls)
        if delta.logprobs:
            choice.logprobs.extend(delta.logprobs)
        if delta.usage is not None:
            self.usage = delta.usage
        if delta.model_version is not None:
            self.model_version = delta.model_version
        if delta.finish_reason is not None and choice.finish is None:
            choice.finish = delta.finish_reason
            self._finished += 1
        return self._finished >= self.n

    def completion(self) -> Completion:
        """The whole answer: choice 0, the others as its ``alternatives``. Call it once every
        choice has finished (``add`` said so)."""
        first, *rest = (
            Completion(
                text="".join(c.texts),
                finish_reason=c.finish or "stop",
                tool_calls=whole_calls(c.calls) if c.calls else (),
                logprobs=c.logprobs if self.logprobs else None,
                reasoning="".join(c.thoughts),
            )
            for c in self._choices
        )
        first.usage = self.usage or Usage()
        first.model_version = self.model_version
        first.alternatives = tuple(rest)
        return first


async def assembled(request: ChatRequest, deltas: AsyncGenerator[Delta, None]) -> Completion:
    """A provider's whole answer made of its own stream (``Assembly``): exactly what the same
    request streams; the stream is closed once every choice has finished."""
    whole = Assembly(request.n, logprobs=request.logprobs)
    async with contextlib.aclosing(deltas) as pieces:
        async for delta in pieces:
            if whole.add(delta):
                break
    return whole.completion()


def completion_body(
    *, completion_id: str, model: str, completion: Completion, extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": message_body(choice),
                "finish_reason": choice.finish_reason,
                "logprobs": logprobs_body(choice.logprobs),
            }
            for i, choice in enumerate((completion, *completion.alternatives))
        ],
        "usage": completion.usage.as_dict(),  # every choice's tokens, counted once
        "standby": extra,
    }


def logprobs_body(content: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """A choice's ``logprobs``: its tokens under ``content`` (null when none were asked for)."""
    return None if content is None else {"content": content, "refusal": None}


def message_body(completion: Completion) -> dict[str, Any]:
    """A whole answer's ``message``: ``content`` is null when the answer is only tool calls."""
    calls = completion.tool_calls
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.text if completion.text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = [c.openai() for c in calls]
    return message


def chunk_body(
    *,
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    usage: Usage | None = None,
    with_choice: bool = True,
    index: int = 0,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One chunk of choice ``index`` (``with_choice=False``: the usage chunk, no choice)."""
    choice = {
        "index": index,
        "delta": delta,
        "finish_reason": finish_reason,
        "logprobs": logprobs_body(logprobs),
    }
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice] if with_choice else [],
    }
    if usage is not None:
        body["usage"] = usage.as_dict()
    return body


def error_body(
    message: str, *, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
