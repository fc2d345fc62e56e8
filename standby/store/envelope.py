"""The event envelope: ``{specversion, id, type, time, source, data}``, CloudEvents-like.

``specversion`` is the schema version of this envelope; a reader rejects versions it does not
know. ``id`` (32 hex digits, sortable by millisecond, see ``new_event_id``) is what consumers
deduplicate on, since delivery is at-least-once. ``data`` is typed per event type
(``inference.completed``, ``breaker.changed``); the pipeline's events carry a loose dict for now.

Events are written at gateway request rates: encoding and decoding are pydantic-core's own JSON
serializer and parser (serializing straight to bytes is ~20% cheaper than model_dump + orjson;
validating straight from bytes ~40% faster than orjson.loads + validate), and the size limit
is checked on the encoded bytes before anything reaches storage. The capture writer skips the
models on the way out: ``encode_inference_completed`` validates the answer's data against
``InferenceCompletedData`` and writes it, in the envelope, with orjson.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, NotRequired, TypedDict, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from standby.errors import validation_message
from standby.protocol import FinishReason
from standby.store.errors import EventTooLarge, MalformedEvent

SPEC_VERSION: Final = "1.0"
MAX_EVENT_BYTES = 1 << 20  # 1 MiB per encoded event

EventType = Literal[
    "inference.completed",
    "breaker.changed",
    "dataset.snapshot_created",
    "training.completed",
    "evaluation.completed",
    "model.promoted",
    "model.rolled_back",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

Provenance = Literal["primary", "fallback", "stitched"]
Role = Literal["system", "user", "assistant", "tool"]
BreakerState = Literal["closed", "half_open", "open"]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def new_event_id() -> str:
    """32 hex digits: 48 bits of Unix milliseconds then 80 random bits (the ULID / UUIDv7
    layout), so ids sort by creation time across processes and never collide in practice.

    The random bits come from ``random`` (seeded from the OS at start-up and again in a forked
    child), not ``os.urandom``: an id is not a secret, and a system call per event was ~10 % of
    the capture writer's CPU under load."""
    return f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


def _now() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _absent(value: object) -> bool:
    return value is None


def _optional() -> Any:
    """An optional field added after 1.0: None when absent, and left out of the encoded event
    when None, so an event that does not use it reads as it did before (an older reader
    rejects an event that does: upgrade readers first, docs/deploy.md)."""
    return Field(default=None, exclude_if=_absent)


class CapturedToolCall(_Model):
    """A tool call the model made: ``arguments`` is JSON text, as the client saw it (Gemini's
    thought signature is not kept: it is opaque, and only Gemini can use it)."""

    id: str
    name: str
    arguments: str


class CapturedTool(_Model):
    """A function the request offered the model."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class CapturedMedia(_Model):
    """An image, audio clip or file of a user turn: what it was (kind, MIME type, size, sha256
    digest), and its bytes in base64 only where ``media.keep_in_capture`` is on."""

    kind: Literal["image", "audio", "file"]
    mime_type: str
    bytes: Annotated[int, Field(ge=0)]
    digest: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
    data: str | None = _optional()


class ChatMessage(_Model):
    """A turn; an assistant turn may carry ``tool_calls``, a ``tool`` turn answers the call
    ``tool_call_id`` of function ``name``; a user turn's ``media`` are its images, audio and
    files in order (``content`` is then its text parts joined)."""

    role: Role
    content: str
    tool_calls: list[CapturedToolCall] | None = _optional()
    tool_call_id: str | None = _optional()
    name: str | None = _optional()
    media: list[CapturedMedia] | None = _optional()


class TokenUsage(_Model):
    prompt_tokens: Annotated[int, Field(ge=0)] = 0
    completion_tokens: Annotated[int, Field(ge=0)] = 0


class InferenceCompletedData(_Model):
    """One answered request, as the gateway saw it. Only ``provenance="primary"`` answers with
    ``finish_reason="stop"`` may become training pairs (the small model never learns from itself).
    ``tools`` (offered) and ``tool_calls`` (the answer's calls) are there only when the request
    used tools.
    """

    request_id: str
    route: str
    backend: str = Field(description="The backend that answered.")
    provenance: Provenance
    model: str
    model_version: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    params: dict[str, Any] = Field(default_factory=dict)
    response: str
    finish_reason: FinishReason
    usage: TokenUsage = TokenUsage()
    latency_s: NonNegative
    ttft_s: NonNegative | None = None
    fallback_reason: str | None = None
    stream: bool = False
    key_id: Annotated[str, Field(pattern=r"^[0-9a-f]{8,64}$")] | None = Field(
        default=None, description="A digest prefix of the client's gateway key, never the key."
    )
    tools: list[CapturedTool] | None = _optional()
    tool_calls: list[CapturedToolCall] | None = _optional()


class CapturedToolCallJSON(TypedDict):
    id: str
    name: str
    arguments: str


class CapturedToolJSON(TypedDict):
    name: str
    description: str | None
    parameters: dict[str, Any] | None


class CapturedMediaJSON(TypedDict):
    kind: Literal["image", "audio", "file"]
    mime_type: str
    bytes: int
    digest: str
    data: NotRequired[str]


class ChatMessageJSON(TypedDict):
    role: Role
    content: str
    tool_calls: NotRequired[list[CapturedToolCallJSON]]
    tool_call_id: NotRequired[str]
    name: NotRequired[str]
    media: NotRequired[list[CapturedMediaJSON]]


class TokenUsageJSON(TypedDict):
    prompt_tokens: int
    completion_tokens: int


class InferenceCompletedJSON(TypedDict):
    """``InferenceCompletedData`` as plain JSON values, field for field: what the gateway's
    capture path builds for an answer (a dict, no model, nothing validated on the request path)
    and ``encode_inference_completed`` validates in the capture writer."""

    request_id: str
    route: str
    backend: str
    provenance: Provenance
    model: str
    model_version: str | None
    messages: list[ChatMessageJSON]
    params: dict[str, Any]
    response: str
    finish_reason: FinishReason
    usage: TokenUsageJSON
    latency_s: float
    ttft_s: float | None
    fallback_reason: str | None
    stream: bool
    key_id: str | None
    tools: NotRequired[list[CapturedToolJSON]]
    tool_calls: NotRequired[list[CapturedToolCallJSON]]


class BreakerChangedData(_Model):
    backend: str
    old_state: BreakerState
    new_state: BreakerState
    open_for_s: NonNegative | None = Field(
        default=None, description="How long the breaker stays open (cool-down or Retry-After)."
    )


class _Envelope(_Model):
    specversion: Literal["1.0"] = "1.0"
    id: Annotated[str, Field(min_length=1, max_length=128)] = Field(default_factory=new_event_id)
    time: datetime = Field(default_factory=_now)
    source: Annotated[str, Field(min_length=1, max_length=256)]


class InferenceCompleted(_Envelope):
    type: Literal["inference.completed"] = "inference.completed"
    data: InferenceCompletedData


class BreakerChanged(_Envelope):
    type: Literal["breaker.changed"] = "breaker.changed"
    data: BreakerChangedData


class PipelineEvent(_Envelope):
    """Snapshot, training, evaluation and promotion events; ``data`` is not typed yet."""

    type: Literal[
        "dataset.snapshot_created",
        "training.completed",
        "evaluation.completed",
        "model.promoted",
        "model.rolled_back",
    ]
    data: dict[str, Any] = Field(default_factory=dict)


Event = Annotated[InferenceCompleted | BreakerChanged | PipelineEvent, Field(discriminator="type")]
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)
_DATA_VALIDATOR = InferenceCompletedData.__pydantic_validator__


def encode_event(event: Event) -> bytes:
    """JSON bytes of ``event``; EventTooLarge when they exceed MAX_EVENT_BYTES."""
    raw = event.__pydantic_serializer__.to_json(event)
    if len(raw) > MAX_EVENT_BYTES:
        raise EventTooLarge(event.type, len(raw), MAX_EVENT_BYTES)
    return raw


def encode_inference_completed(
    data: dict[str, Any], *, source: str, at: datetime | None = None
) -> bytes:
    """An ``inference.completed`` event for ``data`` (``InferenceCompletedJSON``: the
    InferenceCompletedData fields as plain JSON values), validated, then encoded with orjson
    next to the envelope fields, with a new id and the time ``at`` (default: now).

    The capture writer's path, cheaper than ``encode_event`` of a model plus ``decode_event``
    of the bytes: only ``data`` comes from outside (the envelope's fields are made here), so only
    ``data`` is validated, as a dict, and then encoded as given. MalformedEvent (naming the
    field) when it is off the schema; EventTooLarge like encode_event."""
    try:
        _DATA_VALIDATOR.validate_python(data)
    except ValidationError as e:
        raise MalformedEvent(f"invalid event: {validation_message(e, 'data')}") from None
    envelope = {
        "specversion": SPEC_VERSION,
        "id": new_event_id(),
        "time": at or _now(),
        "source": source,
        "type": "inference.completed",
        "data": data,
    }
    raw = orjson.dumps(envelope, option=orjson.OPT_UTC_Z)
    if len(raw) > MAX_EVENT_BYTES:
        raise EventTooLarge("inference.completed", len(raw), MAX_EVENT_BYTES)
    return raw


def check_sizes(bodies: Sequence[bytes]) -> None:
    """EventTooLarge for the first encoded event over MAX_EVENT_BYTES."""
    for raw in bodies:
        if len(raw) > MAX_EVENT_BYTES:
            raise EventTooLarge("encoded", len(raw), MAX_EVENT_BYTES)


def decode_event(raw: bytes | str) -> Event:
    """Parse and validate an encoded event; MalformedEvent says what is wrong in one line."""
    if len(raw) > MAX_EVENT_BYTES:
        raise MalformedEvent(f"encoded event is {len(raw)} bytes, over {MAX_EVENT_BYTES}")
    try:
        return _EVENT.validate_json(raw)
    except ValidationError as e:
        version = _version_of(raw)
        if version is not None and version != SPEC_VERSION:
            raise MalformedEvent(
                f"unsupported event specversion {version!r} (this reader: {SPEC_VERSION})"
            ) from None
        raise MalformedEvent(f"invalid event: {validation_message(e)}") from None


def _version_of(raw: bytes | str) -> object:
    """The ``specversion`` of a rejected event, to say so first (only on the error path)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return obj.get("specversion") if isinstance(obj, dict) else None
