"""Errors of the event bus, under the one hierarchy of ``standby.errors``.

    StandbyError
     └── BusError              the bus cannot be used: unreachable, disk full, read-only, corrupt
          ├── EventTooLarge    an encoded event is over MAX_EVENT_BYTES; nothing was written
          └── MalformedEvent   bytes that are not a valid event envelope

``reason`` is a fixed, low-cardinality word for metric labels (``full``, ``readonly``,
``corrupt``, ``unavailable``, ``closed``, ``too_large``, ``malformed``, ``error``). Messages
never carry secrets: URLs are shown with their password removed.
"""

from __future__ import annotations

from standby.errors import StandbyError


class BusError(StandbyError):
    """The event bus failed; the message names the bus (URL without password) and the cause."""

    def __init__(self, message: str, *, reason: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class EventTooLarge(BusError):
    """An event's encoded size is over the limit; the batch it belongs to was not written."""

    def __init__(self, event_type: str, size: int, limit: int) -> None:
        super().__init__(
            f"event of type {event_type!r} is {size} bytes encoded, over the {limit}-byte limit",
            reason="too_large",
        )
        self.size = size
        self.limit = limit


class MalformedEvent(BusError):
    """Bytes that do not decode to a valid event envelope (bad JSON, unknown type or version)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="malformed")
