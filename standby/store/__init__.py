"""Storage shared by serving and the training loop: the event envelope and its types, the bus
that carries events (SQLite or Redis Streams), the pipeline state beside it, the model registry,
and the model card.

``open_bus(url)``, ``open_state(url)`` and ``open_responses(url)`` (``connect.py``) pick the
backend; the Redis one is imported only when a ``redis://`` URL asks for it, so the embedded
default needs no Redis client installed.
"""

from standby.store.bus import Bus, Delivery
from standby.store.connect import open_bus, open_responses, open_state
from standby.store.envelope import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    SPEC_VERSION,
    BreakerChanged,
    BreakerChangedData,
    ChatMessage,
    Event,
    InferenceCompleted,
    InferenceCompletedData,
    PipelineEvent,
    TokenUsage,
    decode_event,
    encode_event,
    encode_inference_completed,
    new_event_id,
)
from standby.store.errors import BusError, EventTooLarge, MalformedEvent

__all__ = [
    "EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "SPEC_VERSION",
    "BreakerChanged",
    "BreakerChangedData",
    "Bus",
    "BusError",
    "ChatMessage",
    "Delivery",
    "Event",
    "EventTooLarge",
    "InferenceCompleted",
    "InferenceCompletedData",
    "MalformedEvent",
    "PipelineEvent",
    "TokenUsage",
    "decode_event",
    "encode_event",
    "encode_inference_completed",
    "new_event_id",
    "open_bus",
    "open_responses",
    "open_state",
]
