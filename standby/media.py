"""Media in a request (images, audio, files such as PDFs), normalized: what a client's content
parts become (``Media``), before a provider sends them in its own shape (Gemini's
``inlineData``, an OpenAI-style server's content parts).

A part arrives inline (a ``data:`` URL, ``input_audio`` or ``file_data`` in base64) or as an
``http(s)`` URL, which the gateway fetches before any backend is called
(``standby.gateway.fetch``): providers only ever see bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Literal

MediaKind = Literal["image", "audio", "file"]

# What each kind may be, by MIME type (Gemini's documented input types; a backend may accept
# fewer and says so in its capabilities).
MIME_TYPES: dict[MediaKind, frozenset[str]] = {
    "image": frozenset(
        {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif", "image/gif"}
    ),
    "audio": frozenset({"audio/wav", "audio/mp3", "audio/mpeg"}),
    "file": frozenset({"application/pdf", "text/plain"}),
}
AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mp3"}


class MediaError(ValueError):
    """A media part that cannot be read; the message names what is wrong (the caller adds
    where)."""


@dataclass(frozen=True, slots=True)
class Media:
    """One image, audio clip or file. ``data`` is its bytes once known; ``url`` an ``http(s)``
    address still to fetch (``data`` is then empty)."""

    kind: MediaKind
    mime_type: str
    data: bytes = b""
    url: str | None = None
    filename: str | None = None
    detail: str | None = None

    @property
    def fetched(self) -> bool:
        return self.url is None

    def digest(self) -> str:
        """``sha256:<hex>`` of the bytes (what capture keeps instead of them by default)."""
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    def data_url(self) -> str:
        return f"data:{self.mime_type};base64,{self.base64()}"

    def summary(self) -> dict[str, str | int]:
        """What is kept of it when its bytes are not: kind, type, size and digest."""
        return {
            "kind": self.kind,
            "mime_type": self.mime_type,
            "bytes": len(self.data),
            "digest": self.digest(),
        }


def decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError("is not valid base64") from None


def parse_data_url(url: str) -> tuple[str, bytes]:
    """``data:<mime>;base64,<data>`` as (MIME type, bytes)."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:"):
        raise MediaError("is not a data: URL")
    meta = head.removeprefix("data:").split(";")
    if "base64" not in meta[1:]:
        raise MediaError("must be base64-encoded (data:<type>;base64,...)")
    mime = meta[0].strip().lower() or "application/octet-stream"
    return mime, decode_base64(payload)


def check_type(kind: MediaKind, mime: str) -> str:
    """``mime`` when the kind may be it, else a ``MediaError`` naming the accepted types."""
    mime = mime.split(";")[0].strip().lower()
    if mime not in MIME_TYPES[kind]:
        accepted = ", ".join(sorted(MIME_TYPES[kind]))
        raise MediaError(f"has type {mime!r}; a {kind} must be one of {accepted}")
    return mime


def sniff_file_type(data: bytes, filename: str | None) -> str:
    """The MIME type of a ``file`` part sent without one: PDFs by their magic bytes."""
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if filename is not None and filename.lower().endswith(".txt"):
        return "text/plain"
    raise MediaError("is not a PDF (the only file type without a data: URL to name it)")
