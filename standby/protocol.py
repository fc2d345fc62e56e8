"""OpenAI chat-completions protocol: the request model clients send, the normalized request
providers receive, and the response / chunk / error bodies the gateway writes.

Responses are built as plain dicts and serialized with orjson: they are on the hot path and
their shape is fixed, so a pydantic round-trip would only cost CPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = logging.getLogger("standby.protocol")

Role = Literal["system", "developer", "user", "assistant"]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format.json_schema is required when type is json_schema")
        if self.json_schema is not None:
            try:  # what every backend is sent: JSON numbers beyond 64 bits cannot be
                orjson.dumps(self.json_schema.model_dump(by_alias=True))
            except TypeError:
                raise ValueError(
                    "response_format.json_schema: integers must fit in 64 bits"
                ) from None
        return self


# Backends take token counts as 32-bit and seeds as 64-bit integers (and JSON encoders stop at 64
# bits): a larger number is the client's error, said as such, not a failure further down.
INT32_MAX = 2**31 - 1


class ChatCompletionRequest(BaseModel):
    """What a client may send to ``POST /v1/chat/completions``. Unknown fields are accepted
    (SDKs add new ones all the time) and logged once per field name."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None

    @field_validator("messages")
    @classmethod
    def _has_user_turn(cls, messages: list[ChatMessageIn]) -> list[ChatMessageIn]:
        if not any(m.role == "user" for m in messages):
            raise ValueError("messages must contain at least one user message")
        return messages


_warned_fields: set[str] = set()


def log_ignored_fields(req: ChatCompletionRequest) -> None:
    """Log each unknown request field once per process, so operators see what SDKs send."""
    for name in req.model_extra or ():
        if name not in _warned_fields:
            _warned_fields.add(name)
            log.info("ignoring unsupported request field %r", name)


@dataclass(frozen=True, slots=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str


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

    @classmethod
    def from_openai(cls, req: ChatCompletionRequest) -> ChatRequest:
        messages = tuple(
            Message("system" if m.role == "developer" else m.role, m.text()) for m in req.messages
        )
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
        )

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
        }
        return {k: v for k, v in values.items() if v is not None}

    def continued(self, partial: str) -> ChatRequest:
        """The same request, asking the next backend to continue ``partial``."""
        if self.continue_final:
            head, last = self.messages[:-1], self.messages[-1]
            messages = (*head, Message("assistant", last.content + partial))
        else:
            messages = (*self.messages, Message("assistant", partial))
        return replace(self, messages=messages, continue_final=True)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


# Why an answer ended, the same words in responses and in captured events.
FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


@dataclass(slots=True)
class Completion:
    """A whole answer from one backend."""

    text: str
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    model_version: str | None = None


@dataclass(slots=True)
class Delta:
    """One streamed piece of an answer. The last delta of a stream carries ``finish_reason``
    and, where the backend reports them, ``usage`` and ``model_version``."""

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    model_version: str | None = None


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
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "finish_reason": completion.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": completion.usage.as_dict(),
        "standby": extra,
    }


def chunk_body(
    *,
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    usage: Usage | None = None,
    with_choice: bool = True,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": (
            [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
            if with_choice
            else []
        ),
    }
    if usage is not None:
        body["usage"] = usage.as_dict()
    return body


def error_body(
    message: str, *, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
