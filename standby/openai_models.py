"""What clients send to ``POST /v1/chat/completions``: OpenAI's request, as pydantic models.

Unknown fields are accepted (SDKs add new ones all the time) and logged once per field name;
``standby.protocol.ChatRequest.from_openai`` turns a request into what providers receive.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from standby.media import (
    AUDIO_FORMATS,
    Media,
    MediaError,
    check_type,
    decode_base64,
    parse_data_url,
    sniff_file_type,
)

log = logging.getLogger("standby.protocol")


SCHEMA_CACHE_BYTES = 8 << 10
"""Schemas up to this size (as JSON) are cached; larger ones are checked every time. Clients
choose the schemas: unbounded, each of the cache's 1024 entries could keep one as large as a
request body (16 MiB)."""


def schema_problem(schema_json: bytes) -> str | None:
    """What is wrong with a tool's ``parameters`` schema (None: nothing). Cached by its JSON
    up to ``SCHEMA_CACHE_BYTES``: applications send the same tools with every request, and
    checking one costs far more than encoding it."""
    if len(schema_json) > SCHEMA_CACHE_BYTES:
        return _schema_problem(schema_json)
    return _cached_schema_problem(schema_json)


def _schema_problem(schema_json: bytes) -> str | None:
    import jsonschema  # type: ignore[import-untyped]

    schema = orjson.loads(schema_json)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        where = ".".join(str(p) for p in e.absolute_path)
        return f"{where}: {e.message}" if where else e.message
    return None


_cached_schema_problem = lru_cache(maxsize=1024)(_schema_problem)


Role = Literal["system", "developer", "user", "assistant", "tool"]


class OpenModel(BaseModel):
    """A part of the request that accepts fields it does not know: SDKs add new ones."""

    model_config = ConfigDict(extra="allow")


class TextPart(OpenModel):
    type: Literal["text"]
    text: str


class RefusalPart(OpenModel):
    """An assistant turn's refusal, sent back with the history: kept as its text."""

    type: Literal["refusal"]
    refusal: str

    @property
    def text(self) -> str:
        return self.refusal


class ImageUrl(OpenModel):
    url: Annotated[str, Field(min_length=1)]
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(OpenModel):
    type: Literal["image_url"]
    image_url: ImageUrl

    def media(self) -> Media:
        url = self.image_url.url
        detail = self.image_url.detail
        if url.startswith("data:"):
            mime, data = parse_data_url(url)
            return Media("image", check_type("image", mime), data, detail=detail)
        if url.lower().startswith(("https://", "http://")):
            return Media("image", "", url=url, detail=detail)  # fetched by the gateway
        raise MediaError("must be a data: URL or an http(s) URL")


class InputAudio(OpenModel):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(OpenModel):
    type: Literal["input_audio"]
    input_audio: InputAudio

    def media(self) -> Media:
        audio = self.input_audio
        return Media("audio", AUDIO_FORMATS[audio.format], decode_base64(audio.data))


class FileIn(OpenModel):
    filename: str | None = None
    file_data: str | None = None
    file_id: str | None = None


class FilePart(OpenModel):
    type: Literal["file"]
    file: FileIn

    def media(self) -> Media:
        f = self.file
        if f.file_data is None:
            raise MediaError(
                "needs file_data (uploaded files, file_id, are not kept by this gateway)"
            )
        if f.file_data.startswith("data:"):
            mime, data = parse_data_url(f.file_data)
            mime = check_type("file", mime)
        else:
            data = decode_base64(f.file_data)
            mime = sniff_file_type(data, f.filename)
        return Media("file", mime, data, filename=f.filename)


MediaPart = ImagePart | AudioPart | FilePart
ContentPart = Annotated[
    TextPart | RefusalPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")
]


class FunctionCallIn(OpenModel):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    arguments: str = "{}"

    @field_validator("arguments")
    @classmethod
    def _a_json_object(cls, arguments: str) -> str:
        # Every backend takes a call's arguments as an object (Gemini's functionCall.args, the
        # chat templates of local models): text that is not one cannot be sent back anywhere.
        try:
            value = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object (the arguments of the call, as JSON text)")
        return arguments


class ToolCallIn(OpenModel):
    """An assistant message's ``tool_calls[]`` item, as the client sends its history back."""

    id: Annotated[str, Field(min_length=1, max_length=512)]
    type: Literal["function"] = "function"
    function: FunctionCallIn
    extra_content: dict[str, Any] | None = None

    def signature(self) -> str | None:
        """Gemini's thought signature, where the call carries one back."""
        google = (self.extra_content or {}).get("google")
        value = google.get("thought_signature") if isinstance(google, dict) else None
        return value if isinstance(value, str) else None


class ChatMessageIn(OpenModel):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: Annotated[str, Field(min_length=1, max_length=512)] | None = None

    @model_validator(mode="after")
    def _tool_fields_fit_the_role(self) -> ChatMessageIn:
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs tool_call_id (the id of the call it answers)")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if isinstance(self.content, list) and self.role != "user":
            media = next((p.type for p in self.content if isinstance(p, MediaPart)), None)
            if media is not None:
                raise ValueError(f"only user messages may carry {media} parts")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart | RefusalPart))

    def parts(self) -> tuple[str | Media, ...]:
        """The content in order, text as ``str`` and media as ``Media``; empty when the
        content is only text (``text()`` is then all of it). A part that cannot be read is a
        ``RequestError`` naming it (``messages.<i>.content.<j>``, filled in by the caller)."""
        if not isinstance(self.content, list) or not any(
            isinstance(p, MediaPart) for p in self.content
        ):
            return ()
        out: list[str | Media] = []
        for j, p in enumerate(self.content):
            if isinstance(p, TextPart | RefusalPart):
                out.append(p.text)
                continue
            try:
                out.append(p.media())
            except MediaError as e:
                raise PartError(j, p.type, str(e)) from None
        return tuple(out)


class PartError(Exception):
    """Content part ``index`` (of type ``kind``) cannot be read: ``problem`` says why."""

    def __init__(self, index: int, kind: str, problem: str) -> None:
        super().__init__(problem)
        self.index, self.kind, self.problem = index, kind, problem


# A function name every backend can call: OpenAI's letters, digits, _ and - (plus the dots
# Gemini and Gemma accept), starting as Gemini requires, at most 64 characters.
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


class FunctionSpec(OpenModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("name")
    @classmethod
    def _callable_everywhere(cls, name: str) -> str:
        if not _FUNCTION_NAME.fullmatch(name):
            raise ValueError(
                "a function name is 1-64 of A-Z a-z 0-9 _ . - and starts with a letter or _"
            )
        return name

    @field_validator("parameters")
    @classmethod
    def _a_json_schema(cls, parameters: dict[str, Any] | None) -> dict[str, Any] | None:
        if parameters is not None:
            try:  # what every backend is sent: JSON numbers beyond 64 bits cannot be
                encoded = orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS)
            except TypeError:
                raise ValueError("integers must fit in 64 bits") from None
            problem = schema_problem(encoded)
            if problem is not None:
                raise ValueError(f"not a valid JSON Schema: {problem}")
        return parameters


class ToolSpec(OpenModel):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(OpenModel):
    name: str


class NamedToolChoice(OpenModel):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(OpenModel):
    include_usage: bool = False


class JsonSchemaSpec(OpenModel):
    model_config = ConfigDict(populate_by_name=True)
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


# OpenAI's reasoning efforts; each backend maps them (Gemini: docs/parameters.md).
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
Bias = Annotated[int, Field(ge=-100, le=100)]
# Choices per request: Gemini's candidateCount allows up to 8.
MAX_CHOICES = 8

# Backends take token counts as 32-bit and seeds as 64-bit integers (and JSON encoders stop at 64
# bits): a larger number is the client's error, said as such, not a failure further down.
INT32_MAX = 2**31 - 1


class ChatCompletionRequest(OpenModel):
    """What a client may send to ``POST /v1/chat/completions``. Unknown fields are accepted
    (SDKs add new ones all the time) and logged once per field name."""

    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None
    reasoning_effort: ReasoningEffort | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False)] | None = None
    logit_bias: Annotated[dict[str, Bias], Field(max_length=1024)] | None = None
    service_tier: Annotated[str, Field(max_length=64)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[ToolSpec], Field(max_length=512)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None  # legacy: refused with a pointer to ``tools``
    function_call: Any = None

    @model_validator(mode="after")
    def _tools_are_consistent(self) -> ChatCompletionRequest:
        if self.functions is not None or self.function_call is not None:
            raise ValueError(
                "the legacy functions / function_call fields are not supported: "
                "send tools and tool_choice instead"
            )
        names = [t.function.name for t in self.tools or ()]
        if len(set(names)) != len(names):
            raise ValueError("tools: function names must be unique")
        if isinstance(self.tool_choice, NamedToolChoice):
            if self.tool_choice.function.name not in names:
                raise ValueError(
                    f"tool_choice names the function {self.tool_choice.function.name!r}, "
                    "which is not among tools"
                )
        elif self.tool_choice == "required" and not names:
            raise ValueError("tool_choice is required but no tools were given")
        return self

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias: dict[str, int] | None) -> dict[str, int] | None:
        bad = next(
            (k for k in bias or () if not k.isascii() or not k.isdigit() or len(k) > 10), None
        )
        if bad is not None:
            raise ValueError(f"keys are token ids (decimal integers); {bad[:40]!r} is not one")
        return bias


# Unknown field names logged so far. Clients choose the names, so both the set and each line
# are bounded: past MAX_WARNED names nothing more is logged (one line says so), and a name is
# logged cut to WARNED_NAME_CHARS.
MAX_WARNED = 256
WARNED_NAME_CHARS = 64
_warned_fields: set[str | None] = set()  # None: the cap was reached (and said so)


def log_ignored_fields(req: OpenModel) -> None:
    """Log each unknown request field once per process, so operators see what SDKs send."""
    for name in req.model_extra or ():
        key = name[:WARNED_NAME_CHARS]
        if key in _warned_fields or None in _warned_fields:
            continue
        if len(_warned_fields) >= MAX_WARNED:
            _warned_fields.add(None)
            log.info("ignoring unsupported request fields: %d names logged, no more", MAX_WARNED)
            return
        _warned_fields.add(key)
        cut = "..." if len(name) > WARNED_NAME_CHARS else ""
        log.info("ignoring unsupported request field %r%s", key, cut)
