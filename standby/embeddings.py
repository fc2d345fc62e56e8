"""``POST /v1/embeddings``: OpenAI's request as the gateway reads it, what an embedding backend
receives and returns, and the OpenAI answer built from it.

``input`` may be a string or a list of strings. Token arrays (lists of integers, which
langchain's ``OpenAIEmbeddings`` sends unless ``check_embedding_ctx_length=False``) are a 400:
token ids are those of one tokenizer, and no backend kind here takes them from a client.
"""

from __future__ import annotations

import array
import base64
import sys
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from standby.errors import RequestError, parse_json


class EmbeddingRequestBody(BaseModel):
    """OpenAI's ``CreateEmbeddingRequest``; unknown fields are accepted (SDKs add them)."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65536)  # vectors that size at most
    user: str | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """What an embedding backend receives: the texts, in order, and the wanted dimensions."""

    texts: tuple[str, ...]
    dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class Embeddings:
    """One vector per text, in the request's order, and the tokens the backend counted (0
    when it says nothing)."""

    vectors: list[list[float]]
    prompt_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ParsedEmbeddingRequest:
    model: str
    request: EmbeddingRequest
    encoding_format: Literal["float", "base64"]


def parse_embedding_request(body: bytes) -> ParsedEmbeddingRequest:
    """The request, or a ``RequestError`` naming the field (``input.2``)."""
    parsed = parse_json(EmbeddingRequestBody, body)
    texts = _texts(parsed.input)
    return ParsedEmbeddingRequest(
        parsed.model, EmbeddingRequest(texts, parsed.dimensions), parsed.encoding_format
    )


def _texts(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[Any] = [value]
        where = ["input"]
    elif isinstance(value, list) and value:
        items = value
        where = [f"input.{i}" for i in range(len(value))]
    elif isinstance(value, list):
        raise RequestError("input: must not be an empty list", param="input")
    else:
        raise RequestError("input: expected a string or a list of strings", param="input")
    for item, at in zip(items, where, strict=True):
        if isinstance(item, int) or (isinstance(item, list) and item):
            raise RequestError(
                f"{at}: token arrays are not supported, send the text (langchain's "
                "OpenAIEmbeddings: check_embedding_ctx_length=False)",
                param=at,
                code="unsupported",
            )
        if not isinstance(item, str):
            raise RequestError(f"{at}: expected a string", param=at)
        if not item:
            raise RequestError(f"{at}: must not be empty", param=at)
    return tuple(items)


def check_limits(request: EmbeddingRequest, max_inputs: int, max_chars: int) -> None:
    """A 400 for more inputs, or more characters in all, than the route takes."""
    if len(request.texts) > max_inputs:
        raise RequestError(
            f"input: {len(request.texts)} inputs, over this route's limit of {max_inputs}",
            param="input",
        )
    chars = sum(len(t) for t in request.texts)
    if chars > max_chars:
        raise RequestError(
            f"input: {chars} characters in all, over this route's limit of {max_chars}",
            param="input",
        )


def encode_base64(vector: list[float]) -> str:
    """OpenAI's base64 form: the vector as little-endian float32, base64-encoded."""
    packed = array.array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def embedding_body(
    model: str, result: Embeddings, encoding_format: Literal["float", "base64"]
) -> dict[str, Any]:
    """OpenAI's ``CreateEmbeddingResponse`` for ``result``."""
    encode = encode_base64 if encoding_format == "base64" else None
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": encode(vector) if encode is not None else vector,
        }
        for i, vector in enumerate(result.vectors)
    ]
    tokens = result.prompt_tokens
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
