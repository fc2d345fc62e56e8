"""Scripted replies of the SIMULATED Gemini: tests make the next model calls return given raw
texts (malformed JSON, JSON in code fences, out-of-range scores...) or given faults, in order.

    POST /_sim/script   {"replies": ["raw text", {"text": "..."}, {"fault": "error-429-retry-1"}],
                         "match": "optional substring"}
    GET  /_sim/script   what is still queued
    POST /_sim/reset    also clears the script

Each model request (either surface, streamed or whole) takes the first queued reply whose
``match`` is empty or occurs in the request's text (every message, the system instruction
included); with none queued or none matching, the simulator answers as usual. A scripted text
replaces the answer's text (usage counts its words); a scripted fault behaves as that spec.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from standby.sim.faults import Fault, parse_fault


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted reply: a raw ``text`` answer, or a ``fault``."""

    text: str | None = None
    fault: Fault | None = None
    match: str | None = None

    def describe(self) -> dict[str, Any]:
        what: dict[str, Any] = (
            {"fault": self.fault.spec} if self.fault is not None else {"text": self.text}
        )
        if self.match:
            what["match"] = self.match
        return what


def parse_reply(item: Any, match: str | None) -> Reply:
    """A reply from its JSON form (a string, ``{"text": ...}`` or ``{"fault": spec}``);
    ValueError when it is neither."""
    if isinstance(item, str):
        return Reply(text=item, match=match)
    if isinstance(item, dict):
        item_match = item.get("match", match)
        if item_match is not None and not isinstance(item_match, str):
            raise ValueError("match must be a string")
        if isinstance(item.get("text"), str) and "fault" not in item:
            return Reply(text=item["text"], match=item_match)
        spec = item.get("fault")
        if isinstance(spec, str) and "text" not in item:
            fault = parse_fault(spec)
            if fault is None:
                raise ValueError(f"unknown fault spec {spec!r}")
            return Reply(fault=fault, match=item_match)
    raise ValueError(f'a reply is a string, {{"text": "..."}} or {{"fault": "<spec>"}}: {item!r}')


class Script:
    """The queue of scripted replies; safe to fill from a test thread while the server runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Reply] = []
        self.used = 0

    def add(self, replies: Iterable[Reply]) -> None:
        with self._lock:
            self._queue.extend(replies)

    def take(self, context: str) -> Reply | None:
        """The first queued reply that matches ``context`` (removed from the queue)."""
        if not self._queue:  # the common case: no lock, no scan
            return None
        with self._lock:
            for i, reply in enumerate(self._queue):
                if not reply.match or reply.match in context:
                    self.used += 1
                    return self._queue.pop(i)
        return None

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.describe() for r in self._queue]

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self.used = 0
