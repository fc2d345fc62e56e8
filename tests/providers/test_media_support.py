"""Which backends read which media, as each provider says before it is ever called: Gemini all
of them, ``openai`` and ``litellm`` what their ``modalities`` list (text only by default), TGI
and the local backend text only. The words are what a client reads in the 400 or the 503."""

from __future__ import annotations

from typing import Any

import pytest

from standby.config import parse_settings
from standby.media import Media
from standby.protocol import ChatRequest, Message
from standby.providers.base import build_provider

IMAGE = Media("image", "image/png", b"\x89PNG")
AUDIO = Media("audio", "audio/wav", b"RIFF")
PDF = Media("file", "application/pdf", b"%PDF-1.4")


def asking(*media: Media) -> ChatRequest:
    return ChatRequest(messages=(Message("user", "Look.", parts=("Look.", *media)),))


def provider(config: dict[str, Any]) -> Any:
    settings = parse_settings({"backends": {"b": config}, "routes": {"r": ["b"]}}, "test")
    return build_provider("b", settings.backends["b"])


OPENAI = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
LITELLM = {"type": "litellm", "model": "openai/m", "api_base": "http://127.0.0.1:9/v1"}


@pytest.mark.parametrize(
    ("config", "lacks"),
    [
        ({"type": "gemini", "model": "gemini-2.5-flash"}, ""),
        (OPENAI, "audio input, file (PDF) input, image input"),
        ({**OPENAI, "modalities": ["text", "image"]}, "audio input, file (PDF) input"),
        ({**OPENAI, "modalities": ["text", "image", "audio", "file"]}, ""),
        (LITELLM, "audio input, file (PDF) input, image input"),
        ({**LITELLM, "modalities": ["text", "audio", "file"]}, "image input"),
        (
            {"type": "tgi", "base_url": "http://127.0.0.1:9"},
            "audio input, file (PDF) input, image input",
        ),
        (
            {"type": "local", "model": "google/gemma-4-E2B-it"},
            "audio input, file (PDF) input, image input",
        ),
    ],
    ids=["gemini", "openai", "openai-image", "openai-all", "litellm", "litellm-av", "tgi", "local"],
)
def test_each_backend_says_what_media_it_cannot_read(config: dict[str, Any], lacks: str) -> None:
    why = provider(config).unsupported(asking(IMAGE, AUDIO, PDF))
    if not lacks:
        assert why is None
    else:
        assert why is not None and f"does not support {lacks}" in why


def test_text_alone_needs_no_modality() -> None:
    assert provider(OPENAI).unsupported(ChatRequest(messages=(Message("user", "Hi"),))) is None


def test_modalities_are_checked_at_load() -> None:
    with pytest.raises(Exception, match="modalities"):
        provider({**OPENAI, "modalities": ["text", "video"]})
