"""Fault specs of the simulated Gemini server.

A spec is a short string chosen as the model name (``error-429``) or set for every other model
through ``POST /_sim/fault``. :func:`parse_fault` is pure: it turns a spec into a :class:`Fault`
or returns ``None`` when the string is not a spec (an ordinary model name).

    ok                      answer normally
    error-<status>          Google error body with that status
                            (400/401/403/404/413/422/429/500/502/503/504)
    error-429-retry-<s>     429 whose Retry-After / RetryInfo says <s> seconds (default 1)
    slow-<ms>               wait <ms> before the first byte, then answer normally
    hang                    never answer, until the client goes away
    idle-<ms>               stream: wait <ms> between chunks (non-stream: normal)
    cut-<n>                 stream: send <n> chunks then abort; non-stream: abort, no answer
    reset                   abort the connection at once (TCP RST), no response at all
    safety                  a candidate with finishReason SAFETY and no content
    blocked                 no candidates; promptFeedback.blockReason SAFETY
    recitation              a candidate with finishReason RECITATION and no content
    malformed               200 whose body (stream: first data line) is not JSON
    malformed-call          a candidate with finishReason MALFORMED_FUNCTION_CALL and no content
                            (Gemini's answer when the model's function call did not parse)
    flaky-<n>               the first <n> requests after the fault was set fail with 503
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

FaultKind = Literal[
    "ok",
    "error",
    "slow",
    "hang",
    "idle",
    "cut",
    "reset",
    "safety",
    "blocked",
    "recitation",
    "malformed",
    "malformed_call",
    "flaky",
]

# Every status of the failover table (docs/architecture.md): client errors (no failover) and
# backend failures.
ERROR_STATUSES = frozenset({400, 401, 403, 404, 413, 422, 429, 500, 502, 503, 504})
_MAX_MS = 3_600_000  # an hour: anything longer is a typo, not a drill

_PLAIN: dict[str, FaultKind] = {
    "ok": "ok",
    "hang": "hang",
    "reset": "reset",
    "safety": "safety",
    "blocked": "blocked",
    "recitation": "recitation",
    "malformed": "malformed",
    "malformed-call": "malformed_call",
}
_NUMBERED: dict[str, FaultKind] = {
    "slow": "slow",
    "idle": "idle",
    "cut": "cut",
    "flaky": "flaky",
}
_ERROR = re.compile(r"error-(\d{3})(?:-retry-(\d{1,5}))?")
_NUMBER = re.compile(r"([a-z]+)-(\d{1,7})")


@dataclass(frozen=True, slots=True)
class Fault:
    """A parsed spec. ``value`` is the status (error), milliseconds (slow, idle) or count (cut,
    flaky); ``retry_after`` is the 429 hint in seconds."""

    spec: str
    kind: FaultKind
    value: int = 0
    retry_after: int = 1


OK = Fault("ok", "ok")


@lru_cache(maxsize=1024)
def parse_fault(spec: str) -> Fault | None:
    """The fault a spec names, or ``None`` if ``spec`` is not a fault spec."""
    kind = _PLAIN.get(spec)
    if kind is not None:
        return OK if kind == "ok" else Fault(spec, kind)
    if m := _ERROR.fullmatch(spec):
        status = int(m.group(1))
        if status not in ERROR_STATUSES:
            return None
        if m.group(2) is not None:
            if status != 429:
                return None
            return Fault(spec, "error", status, retry_after=int(m.group(2)))
        return Fault(spec, "error", status)
    if m := _NUMBER.fullmatch(spec):
        numbered = _NUMBERED.get(m.group(1))
        value = int(m.group(2))
        if numbered is None or (numbered in ("slow", "idle") and value > _MAX_MS):
            return None
        return Fault(spec, numbered, value)
    return None
