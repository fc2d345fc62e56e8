"""SIMULATED Gemini embeddings (not Google's model): ``:batchEmbedContents`` and
``:embedContent`` on the native surface, ``/embeddings`` on the OpenAI-compatible one.

A vector is a pure function of the model name and the text (SHAKE-256 bytes read as int16
steps of 1/32768, exactly representable in float32), so both surfaces give the same vector for
the same model and text, as one model served twice would; ``outputDimensionality`` /
``dimensions`` keep the first N values (Gemini's models are Matryoshka-trained: a shorter
vector is a prefix). Faults apply as for chat (:mod:`standby.sim.gemini` runs them)."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import orjson
from aiohttp import web

from standby.sim.answers import SimRequest, count_tokens
from standby.sim.surface import BadRequest, Outcome, Surface, Turn, get_field

METHODS = frozenset({"batchEmbedContents", "embedContent"})
DIMENSIONS = 3072  # gemini-embedding-001's full size
MAX_BATCH = 100  # requests in one batchEmbedContents
TASK_TYPES = frozenset(
    {
        "TASK_TYPE_UNSPECIFIED",
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    }
)


def vector(model: str, text: str, dimensions: int | None = None) -> list[float]:
    """The simulated embedding of ``text`` by ``model`` (its first ``dimensions`` values)."""
    size = dimensions or DIMENSIONS
    raw = hashlib.shake_256(f"{model.removeprefix('models/')}\0{text}".encode()).digest(2 * size)
    return [v / 32768 for v in struct.unpack(f"<{size}h", raw)]


class EmbedAnswer(Surface):
    """A computed embeddings answer on ``base``'s surface (its error shape), for the shared
    fault flow of :class:`standby.sim.gemini._Handlers`."""

    def __init__(self, base: Surface, body: dict[str, Any], first_text: str) -> None:
        self.base = base
        self._body = orjson.dumps(body)
        self.req = SimRequest(prompt=first_text)

    def error(self, status: int, message: str, retry_after: int | None = None) -> web.Response:
        return self.base.error(status, message, retry_after)

    def body(self, turn: Turn, outcome: Outcome) -> bytes:
        return self._body


def _dimensions(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= DIMENSIONS:
        raise BadRequest(f"{where}: must be an integer from 1 to {DIMENSIONS}")
    return value


def _one(model: str, request: Any, where: str) -> tuple[str, int | None]:
    """The text and dimensions of one EmbedContentRequest."""
    if not isinstance(request, dict):
        raise BadRequest(f"{where}: expected an object")
    named = request.get("model")
    if named is not None and named.removeprefix("models/") != model:
        raise BadRequest(f"{where}.model: {named!r} differs from the model in the URL {model!r}")
    task = get_field(request, "taskType", "task_type")
    if task is not None and task not in TASK_TYPES:
        raise BadRequest(f"{where}.task_type: invalid value {task!r}")
    content = request.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise BadRequest(f"{where}.content: must have parts")
    texts = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
    if len(texts) != len(parts):
        raise BadRequest(f"{where}.content.parts: only text parts are embedded here")
    text = " ".join(texts)
    if not text:
        raise BadRequest(f"{where}.content: the text is empty")
    dims = _dimensions(
        get_field(request, "outputDimensionality", "output_dimensionality"),
        f"{where}.output_dimensionality",
    )
    return text, dims


def native(base: Surface, model: str, method: str, raw: bytes) -> EmbedAnswer:
    """The answer to a native embeddings call; ``BadRequest`` for a body Gemini refuses."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("Invalid JSON payload received.") from None
    if not isinstance(data, dict):
        raise BadRequest("Invalid JSON payload received: expected an object.")
    if method == "embedContent":
        text, dims = _one(model, data, "request")
        return EmbedAnswer(base, {"embedding": {"values": vector(model, text, dims)}}, text)
    requests = data.get("requests")
    if not isinstance(requests, list) or not requests:
        raise BadRequest("* BatchEmbedContentsRequest.requests: must not be empty")
    if len(requests) > MAX_BATCH:
        raise BadRequest(
            f"* BatchEmbedContentsRequest.requests: at most {MAX_BATCH} requests can be in one "
            "batch"
        )
    items = [_one(model, r, f"requests[{i}]") for i, r in enumerate(requests)]
    body = {"embeddings": [{"values": vector(model, t, d)} for t, d in items]}
    return EmbedAnswer(base, body, items[0][0])


def openai(base: Surface, raw: bytes) -> tuple[str, EmbedAnswer]:
    """The model and answer of ``POST /v1beta/openai/embeddings``."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("Invalid JSON payload received.") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        raise BadRequest("model: required")
    model = data["model"].removeprefix("models/")
    inputs = data.get("input")
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise BadRequest("input: a non-empty string or list of non-empty strings")
    dims = _dimensions(data.get("dimensions"), "dimensions")
    if data.get("encoding_format", "float") != "float":
        raise BadRequest("encoding_format: only float is simulated")
    tokens = sum(count_tokens(t) for t in texts)
    body = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": vector(model, t, dims)}
            for i, t in enumerate(texts)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return model, EmbedAnswer(base, body, texts[0])
