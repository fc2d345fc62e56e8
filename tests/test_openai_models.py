"""The request reader's log of unknown fields: one line per name, bounded in memory and in
line length (clients choose the names)."""

from __future__ import annotations

import logging
import uuid

import pytest

from standby import openai_models
from standby.openai_models import (
    MAX_WARNED,
    WARNED_NAME_CHARS,
    ChatCompletionRequest,
    log_ignored_fields,
)


def _request(**extra: object) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    return ChatCompletionRequest.model_validate(body)


def test_unknown_fields_are_logged_once_and_the_log_is_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    saved = set(openai_models._warned_fields)
    openai_models._warned_fields.clear()
    try:
        caplog.set_level(logging.INFO, logger="standby.protocol")
        long = "x" * 5000
        log_ignored_fields(_request(verbosity="low", **{long: 1}))
        log_ignored_fields(_request(verbosity="low", **{long: 1}))
        lines = [r.getMessage() for r in caplog.records]
        assert lines == [
            "ignoring unsupported request field 'verbosity'",
            f"ignoring unsupported request field {'x' * WARNED_NAME_CHARS!r}...",
        ]
        caplog.clear()
        for _ in range(MAX_WARNED + 50):
            log_ignored_fields(_request(**{f"f{uuid.uuid4().hex}": 1}))
        assert len(openai_models._warned_fields) == MAX_WARNED + 1  # the names, and the marker
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == MAX_WARNED - 2 + 1
        assert (
            lines[-1] == f"ignoring unsupported request fields: {MAX_WARNED} names logged, no more"
        )
        assert max(len(line) for line in lines) < 120
    finally:
        openai_models._warned_fields.clear()
        openai_models._warned_fields.update(saved)
