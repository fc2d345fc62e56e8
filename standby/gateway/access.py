"""Per-request bookkeeping: exactly one metrics update and one JSON access-log line per request.

The log line carries ids, routing and timings only: prompts and answers never go to it.
"""

from __future__ import annotations

import logging
import os
import re
import time
from datetime import UTC, datetime

import orjson

from standby.errors import Overloaded
from standby.gateway.accounting import Accounting
from standby.gateway.capture import Capture
from standby.gateway.captured import Captured
from standby.gateway.failover import Outcome
from standby.protocol import ChatRequest, FinishReason, Usage
from standby.tool_calls import ToolCall

log = logging.getLogger("standby.access")

_SAFE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
REJECTED = "rejected"  # the access log's outcome of a request refused by admission control


def request_id(header: str | None) -> str:
    """The client's ``x-request-id`` if it is a sane token, else a new one."""
    if header is not None and _SAFE_ID.fullmatch(header):
        return header
    return new_id()


def new_id() -> str:
    """128 random bits as hex (os.urandom directly: a uuid4 object per request shows up in
    profiles)."""
    return os.urandom(16).hex()


def outcome_label(status: int) -> str:
    if status < 400:
        return "ok"
    return "client_error" if status < 500 else "error"


class RequestRecord:
    """Opened when a request arrives; ``finish()`` is called once it is answered (for a stream:
    when the stream ends, however it ends). Later calls are ignored."""

    __slots__ = (
        "accounting",
        "capture",
        "chat",
        "done",
        "finish_reason",
        "key_id",
        "model_version",
        "outcome",
        "request_id",
        "response",
        "started",
        "stream",
        "tool_calls",
        "usage",
    )

    def __init__(self, accounting: Accounting, rid: str, capture: Capture | None) -> None:
        self.accounting = accounting
        self.request_id = rid
        self.capture = capture
        self.started = time.perf_counter()
        self.outcome: Outcome | None = None
        self.stream = False
        self.usage: Usage | None = None
        self.done = False
        self.chat: ChatRequest | None = None
        self.key_id: str | None = None
        self.response = ""
        self.finish_reason: FinishReason = "stop"
        self.model_version: str | None = None
        self.tool_calls: tuple[ToolCall, ...] = ()

    def answered(
        self,
        response: str,
        finish_reason: FinishReason,
        usage: Usage | None,
        tool_calls: tuple[ToolCall, ...] = (),
    ) -> None:
        self.response = response
        self.finish_reason = finish_reason
        self.usage = usage
        self.tool_calls = tool_calls

    def failed(self, exc: BaseException, status: int) -> None:
        """Finish a request that ended in the error response ``status`` for ``exc``. A request
        shed by admission control (:class:`Overloaded`) reached no backend: it counts once, in
        ``standby_rejected_requests_total`` under its route (``Admission.enter``), and is logged
        with outcome ``rejected``; it is no answered request and no backend's error."""
        self.finish(status, REJECTED if isinstance(exc, Overloaded) else None)

    def finish(self, status: int, label: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        label = label or outcome_label(status)
        outcome = self.outcome or Outcome("none")
        if label != REJECTED:
            self.accounting.record(outcome, self.started, label, self.usage)
        if label == "ok" and self.chat is not None:
            self._capture(outcome)
        if log.isEnabledFor(logging.INFO):
            log.info(self._line(outcome, status, label))

    def _capture(self, outcome: Outcome) -> None:
        if self.capture is None:
            return
        if self.accounting.capture_off(outcome.route):
            self.capture.filtered()
            return
        assert self.chat is not None
        self.capture.offer(
            Captured(
                self.request_id,
                outcome,
                self.chat,
                self.response,
                self.finish_reason,
                self.usage,
                time.perf_counter() - self.started,
                self.stream,
                self.key_id,
                self.model_version,
                self.tool_calls,
            )
        )

    def _line(self, outcome: Outcome, status: int, label: str) -> str:
        usage = self.usage
        entry = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": self.request_id,
            "route": outcome.route,
            "backend": outcome.backend or None,
            "provenance": outcome.provenance if outcome.backend else None,
            "fallback_reason": outcome.fallback_reason,
            "errors": [f"{e.backend}:{e.reason}" for e in outcome.errors] or None,
            "status": status,
            "outcome": label,
            "stream": self.stream,
            "latency_ms": round((time.perf_counter() - self.started) * 1000, 2),
            "ttft_ms": round(outcome.ttft_s * 1000, 2) if outcome.ttft_s is not None else None,
            "tokens_in": usage.prompt_tokens if usage else None,
            "tokens_out": usage.completion_tokens if usage else None,
        }
        return orjson.dumps(entry).decode()
