"""Media parts on the SIMULATED Gemini: ``inlineData`` blobs on the native surface and OpenAI's
``image_url`` / ``input_audio`` / ``file`` parts on its OpenAI-compatible surface, checked as
Gemini checks them (a MIME type it reads, valid base64), with Google's wording for a refusal.

The simulator does not look at the media: each blob counts ``BLOB_TOKENS`` prompt tokens (what
Gemini documents for a small image) and leaves the answer's words alone.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from standby.sim.surface import BadRequest, get_field

BLOB_TOKENS = 258
# What Gemini reads inline (its documented image, audio and document types).
INLINE_TYPES = frozenset(
    {
        *("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif", "image/gif"),
        *("audio/wav", "audio/mp3", "audio/mpeg", "audio/aiff", "audio/aac", "audio/ogg"),
        *("audio/flac", "application/pdf", "text/plain"),
    }
)
_URL_SAFE = str.maketrans("-_", "+/")
OPENAI_MEDIA = frozenset({"image_url", "input_audio", "file"})


def check_blob(blob: Any, where: str) -> int:
    """Check one ``inlineData`` (or ``inline_data``) value; its prompt tokens."""
    if not isinstance(blob, dict):
        raise BadRequest(f"Invalid value at '{where}' (type.googleapis.com/google.ai.Blob)")
    mime = get_field(blob, "mimeType", "mime_type")
    data = blob.get("data")
    if not isinstance(mime, str) or not isinstance(data, str):
        raise BadRequest(f"{where}: a Blob needs mimeType and data (strings)")
    if mime.lower() not in INLINE_TYPES:
        raise BadRequest(f"Unsupported MIME type: {mime}")
    _decode(data, f"{where}.data")
    return BLOB_TOKENS


def _decode(data: str, where: str) -> bytes:
    try:  # protobuf's JSON takes the URL-safe alphabet too
        return base64.b64decode(data.translate(_URL_SAFE), validate=True)
    except (binascii.Error, ValueError):
        pass
    raise BadRequest(
        f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed for \"{data[:20]}\""
    )


def check_openai_part(part: dict[str, Any], where: str) -> int:
    """Check one OpenAI media content part as Gemini's OpenAI surface reads it; its tokens."""
    kind = part["type"]
    if kind == "image_url":
        url = (part.get("image_url") or {}).get("url")
        if not isinstance(url, str) or not url.startswith("data:"):
            raise BadRequest(f"{where}.image_url.url must be a data: URL (simulated Gemini)")
        return _data_url(url, f"{where}.image_url.url")
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        if audio.get("format") not in ("wav", "mp3") or not isinstance(audio.get("data"), str):
            raise BadRequest(f"{where}.input_audio needs data (base64) and format wav or mp3")
        _decode(audio["data"], f"{where}.input_audio.data")
        return BLOB_TOKENS
    data = (part.get("file") or {}).get("file_data")
    if not isinstance(data, str) or not data.startswith("data:"):
        raise BadRequest(f"{where}.file.file_data must be a data: URL (simulated Gemini)")
    return _data_url(data, f"{where}.file.file_data")


def _data_url(url: str, where: str) -> int:
    head, _, payload = url.partition(",")
    mime = head.removeprefix("data:").split(";")[0]
    if mime.lower() not in INLINE_TYPES or ";base64" not in head:
        raise BadRequest(f"Unsupported MIME type: {mime} ({where})")
    _decode(payload, where)
    return BLOB_TOKENS
