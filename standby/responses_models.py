"""What clients send to ``POST /v1/responses``: OpenAI's Responses request, as pydantic models.

Only what the gateway can serve is modelled: input as a string or as items (messages with text,
image and file parts, ``function_call``, ``function_call_output``, ``reasoning`` items sent
back), function tools, a text format, a reasoning effort and summary, and the sampling limits.
Unknown fields are accepted (SDKs add new ones) and logged once per name, as on chat
(``openai_models.log_ignored_fields``). Items and tools of other kinds are kept as raw objects
here and refused, by name, where the request is translated
(``standby.gateway.responses_input``): a built-in tool is a 400 naming it, never a silent drop.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from standby.openai_models import (
    INT32_MAX,
    FunctionCallIn,
    FunctionSpec,
    JsonSchemaSpec,
    OpenModel,
    ReasoningEffort,
)


class InputText(OpenModel):
    type: Literal["input_text"]
    text: str


class OutputText(OpenModel):
    """An assistant message's text, sent back with the history (``output_text``)."""

    type: Literal["output_text"]
    text: str


class Refusal(OpenModel):
    type: Literal["refusal"]
    refusal: str


class InputImage(OpenModel):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] | None = None


class InputFile(OpenModel):
    type: Literal["input_file"]
    file_data: str | None = None
    filename: str | None = None
    file_id: str | None = None
    file_url: str | None = None


Part = Annotated[
    InputText | OutputText | Refusal | InputImage | InputFile, Field(discriminator="type")
]


class MessageItem(OpenModel):
    """A message: ``type`` is ``message`` or left out (the SDK's "easy" input message)."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(OpenModel):
    """A call the model made earlier, sent back with the history."""

    type: Literal["function_call"]
    call_id: Annotated[str, Field(min_length=1, max_length=512)]
    name: Annotated[str, Field(min_length=1, max_length=256)]
    arguments: str = "{}"
    id: str | None = None
    status: str | None = None
    # Gemini's thought signature, as this gateway sent it (``extra_content.google``).
    extra_content: dict[str, Any] | None = None

    @field_validator("arguments")
    @classmethod
    def _a_json_object(cls, arguments: str) -> str:
        FunctionCallIn(name="f", arguments=arguments)  # the same rule as chat's history
        return arguments

    def signature(self) -> str | None:
        google = (self.extra_content or {}).get("google")
        value = google.get("thought_signature") if isinstance(google, dict) else None
        return value if isinstance(value, str) else None


class FunctionCallOutputItem(OpenModel):
    """A function's result, answering the call ``call_id``."""

    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1, max_length=512)]
    output: str | list[Part]
    id: str | None = None
    status: str | None = None


class SummaryText(OpenModel):
    type: Literal["summary_text"]
    text: str


class ReasoningItem(OpenModel):
    """A ``reasoning`` item of an earlier answer, sent back with the history (the OpenAI Agents
    SDK replays every output item). Read and checked, never sent to a backend: Gemini's state
    of mind travels in the thought signatures of its function calls."""

    type: Literal["reasoning"]
    summary: list[SummaryText]
    id: str | None = None
    status: str | None = None
    encrypted_content: str | None = None


class FunctionTool(FunctionSpec):
    """A function tool, flat as the Responses API has it (chat nests it under ``function``);
    the name and the JSON Schema are checked as on chat."""

    type: Literal["function"]


class NamedFunction(OpenModel):
    type: Literal["function"]
    name: str


class TextFormat(BaseModel):
    """``text.format``: plain text, any JSON object, or JSON that follows ``schema``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> TextFormat:
        if self.type == "json_schema" and self.schema_ is None:
            raise ValueError("text.format.schema is required when type is json_schema")
        try:  # what every backend is sent: JSON numbers beyond 64 bits cannot be
            orjson.dumps(self.schema_)
        except TypeError:
            raise ValueError("text.format.schema: integers must fit in 64 bits") from None
        return self

    def response_format(self) -> dict[str, Any] | None:
        """Chat's ``response_format`` for this format (None: plain text)."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        spec = JsonSchemaSpec(name=self.name, schema=self.schema_, strict=self.strict)
        return {"type": "json_schema", "json_schema": spec.model_dump(by_alias=True)}


class TextParam(OpenModel):
    format: TextFormat | None = None
    verbosity: str | None = None


Summary = Literal["auto", "concise", "detailed"]


class ReasoningParam(OpenModel):
    """``reasoning``: how much to think (``effort``) and whether to summarize the thinking
    (``summary``; ``generate_summary`` is its deprecated name, still sent by older clients)."""

    effort: ReasoningEffort | None = None
    summary: Summary | None = None
    generate_summary: Summary | None = None

    def summarized(self) -> Summary | None:
        return self.summary or self.generate_summary


class ResponsesRequest(OpenModel):
    """What a client may send to ``POST /v1/responses``."""

    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: str | Annotated[list[dict[str, Any]], Field(min_length=1)]
    instructions: str | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=512)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextParam | None = None
    reasoning: ReasoningParam | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    metadata: (
        Annotated[
            dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
            Field(max_length=16),
        ]
        | None
    ) = None
    store: bool | None = None
    stream: bool = False
    background: bool | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    user: Annotated[str, Field(max_length=256)] | None = None
    safety_identifier: Annotated[str, Field(max_length=64)] | None = None
    service_tier: Annotated[str, Field(max_length=64)] | None = None
    truncation: Literal["auto", "disabled"] | None = None
