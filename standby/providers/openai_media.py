"""A user turn's media as OpenAI chat content parts, for OpenAI-style servers (``openai`` and
``litellm`` backends configured with ``modalities``): images as ``image_url`` with a ``data:``
URL, audio as ``input_audio`` (base64 and ``wav`` / ``mp3``), files as ``file`` with
``file_data`` (a ``data:`` URL, as OpenAI documents for PDFs). Bytes always go inline: URLs were
fetched by the gateway."""

from __future__ import annotations

from typing import Any

from standby.media import Media

_AUDIO_FORMATS = {"audio/wav": "wav", "audio/mp3": "mp3", "audio/mpeg": "mp3"}


def content_parts(parts: tuple[str | Media, ...]) -> list[dict[str, Any]]:
    """The parts in order: text as ``text`` parts (empty ones left out), media as theirs."""
    return [
        {"type": "text", "text": p} if isinstance(p, str) else media_part(p)
        for p in parts
        if not isinstance(p, str) or p
    ]


def media_part(media: Media) -> dict[str, Any]:
    if media.kind == "image":
        image: dict[str, Any] = {"url": media.data_url()}
        if media.detail is not None:
            image["detail"] = media.detail
        return {"type": "image_url", "image_url": image}
    if media.kind == "audio":
        fmt = _AUDIO_FORMATS[media.mime_type]
        return {"type": "input_audio", "input_audio": {"data": media.base64(), "format": fmt}}
    file: dict[str, Any] = {"file_data": media.data_url()}
    if media.filename is not None:
        file["filename"] = media.filename
    return {"type": "file", "file": file}
