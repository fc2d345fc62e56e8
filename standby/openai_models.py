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

log = logging.getLogger("standby.protocol")


@lru_cache(maxsize=1024)
def schema_problem(schema_json: bytes) -> str | None:
    """What is wrong with a tool's ``parameters`` schema (None: nothing). Cached by its JSON:
    applications send the same tools with every request, and checking one costs far more
    than encoding it."""
    import jsonschema  # type: ignore[import-untyped]

    schema = orjson.loads(schema_json)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        where = ".".join(str(p) for p in e.absolute_path)
        return f"{where}: {e.message}" if where else e.message
    return None


Role = Literal["system", "developer", "user", "assistant", "tool"]


class OpenModel(BaseModel):
    """A part of the request that accepts fields it does not know: SDKs add new ones."""

    model_config = ConfigDict(extra="allow")


class TextPart(OpenModel):
    type: Literal["text"]
    text: str


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
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: Annotated[str, Field(min_length=1, max_length=512)] | None = None

    @model_validator(mode="after")
    def _tool_fields_fit_the_role(self) -> ChatMessageIn:
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs tool_call_id (the id of the call it answers)")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


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
    n: Annotated[int, Field(ge=1, le=1)] | None = None
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
