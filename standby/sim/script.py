"""Scripted replies of the SIMULATED Gemini: tests make the next model calls return given raw
texts (malformed JSON, JSON in code fences, out-of-range scores...), given function calls, or
given faults, in order.

    POST /_sim/script   {"replies": ["raw text", {"text": "..."}, {"fault": "error-429-retry-1"},
                                     {"calls": [{"name": "get_weather", "args": {"q": 1}}]}],
                         "match": "optional substring"}
    GET  /_sim/script   what is still queued
    POST /_sim/reset    also clears the script

Each model request (either surface, streamed or whole) takes the first queued reply whose
``match`` is empty or occurs in the request's text (every message, the system instruction
included); with none queued or none matching, the simulator answers as usual. A scripted text
replaces the answer's text (usage counts its words); scripted calls are the answer's function
calls (parallel when several, signed like the model's own on ``gemini-3*`` names); a scripted
fault behaves as that spec.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from standby.sim.faults import Fault, parse_fault

ScriptedCall = tuple[str, str]  # a function's name and its arguments as compact JSON


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted reply: a raw ``text`` answer, function ``calls``, or a ``fault``."""

    text: str | None = None
    fault: Fault | None = None
    match: str | None = None
    calls: tuple[ScriptedCall, ...] = ()

    def describe(self) -> dict[str, Any]:
        what: dict[str, Any]
        if self.fault is not None:
            what = {"fault": self.fault.spec}
        elif self.calls:
            what = {"calls": [{"name": n, "args": orjson.loads(a)} for n, a in self.calls]}
        else:
            what = {"text": self.text}
        if self.match:
            what["match"] = self.match
        return what


def parse_reply(item: Any, match: str | None) -> Reply:
    """A reply from its JSON form (a string, ``{"text": ...}``, ``{"calls": [...]}`` or
    ``{"fault": spec}``); ValueError when it is none of them."""
    if isinstance(item, str):
        return Reply(text=item, match=match)
    if isinstance(item, dict):
        item_match = item.get("match", match)
        if item_match is not None and not isinstance(item_match, str):
            raise ValueError("match must be a string")
        if isinstance(item.get("text"), str) and "fault" not in item and "calls" not in item:
            return Reply(text=item["text"], match=item_match)
        if "calls" in item and "text" not in item and "fault" not in item:
            return Reply(calls=_calls(item["calls"]), match=item_match)
        spec = item.get("fault")
        if isinstance(spec, str) and "text" not in item:
            fault = parse_fault(spec)
            if fault is None:
                raise ValueError(f"unknown fault spec {spec!r}")
            return Reply(fault=fault, match=item_match)
    raise ValueError(
        f'a reply is a string, {{"text": "..."}}, {{"calls": [...]}} or {{"fault": "<spec>"}}: '
        f"{item!r}"
    )


def _calls(items: Any) -> tuple[ScriptedCall, ...]:
    if not isinstance(items, list) or not items:
        raise ValueError('calls must be a non-empty list of {"name": str, "args": {...}}')
    calls = []
    for call in items:
        name = call.get("name") if isinstance(call, dict) else None
        args = call.get("args", {}) if isinstance(call, dict) else None
        if not isinstance(name, str) or not name or not isinstance(args, dict):
            raise ValueError(f'a call is {{"name": str, "args": {{...}}}}: {call!r}')
        calls.append((name, orjson.dumps(args).decode()))
    return tuple(calls)


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
