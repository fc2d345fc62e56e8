"""The embedding providers against real HTTP servers: what they send, and answers they must
refuse (a wrong count of vectors, values that are not numbers) as backend failures, so that
failover moves on instead of returning a short or broken list."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from standby.config import GeminiBackend, OpenAIBackend
from standby.embeddings import EmbeddingRequest
from standby.errors import UpstreamProtocolError
from standby.providers.gemini_embed import GeminiEmbedder
from standby.providers.openai_embed import OpenAIEmbedder
from standby.sim.background import AiohttpServer

ANSWERS: dict[str, Any] = {}


async def answer(request: web.Request) -> web.Response:
    return web.json_response(ANSWERS[request.path.rsplit(":", 1)[-1].rsplit("/", 1)[-1]])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    app = web.Application()
    app.router.add_post("/v1beta/models/{call}", answer)
    app.router.add_post("/v1/embeddings", answer)
    running = AiohttpServer(app)
    running.start()
    yield running.url
    running.stop()


def gemini(url: str) -> GeminiEmbedder:
    config = GeminiBackend.model_validate(
        {
            "type": "gemini",
            "model": "gemini-embedding-001",
            "base_url": url,
            "embeddings": {"space": "s", "task_type": "RETRIEVAL_QUERY"},
        }
    )
    return GeminiEmbedder("g", config)


def openai_compat(url: str) -> OpenAIEmbedder:
    config = OpenAIBackend.model_validate(
        {
            "type": "openai",
            "model": "bge",
            "base_url": f"{url}/v1",
            "extra_body": {"truncate_prompt_tokens": 512, "model": "ignored"},
            "embeddings": {"space": "s"},
        }
    )
    return OpenAIEmbedder("o", config)


def test_request_bodies() -> None:
    assert gemini("http://x").request_body(["a", "b"], 8) == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "taskType": "RETRIEVAL_QUERY",
                "outputDimensionality": 8,
                "content": {"parts": [{"text": t}]},
            }
            for t in ("a", "b")
        ]
    }
    assert openai_compat("http://x").request_body(["a"], None) == {
        "truncate_prompt_tokens": 512,
        "model": "bge",
        "input": ["a"],
        "encoding_format": "float",
    }


async def test_openai_answer_out_of_order_is_put_in_order(server: str) -> None:
    ANSWERS["embeddings"] = {
        "data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1]}],
        "usage": {"prompt_tokens": 3},
    }
    embedder = openai_compat(server)
    await embedder.start()
    try:
        result = await embedder.embed(EmbeddingRequest(("a", "b")))
    finally:
        await embedder.close()
    assert result.vectors == [[1.0], [2.0]] and result.prompt_tokens == 3


@pytest.mark.parametrize(
    "body",
    [
        {"embeddings": [{"values": [0.1]}]},  # one vector for two texts
        {"embeddings": [{"values": [0.1]}, {"values": ["x"]}]},
        {"embeddings": [{"values": [0.1]}, {"values": [True]}]},
        {"embeddings": "nope"},
        {},
    ],
)
async def test_broken_gemini_answers_are_protocol_errors(server: str, body: dict[str, Any]) -> None:
    ANSWERS["batchEmbedContents"] = body
    embedder = gemini(server)
    await embedder.start()
    try:
        with pytest.raises(UpstreamProtocolError):
            await embedder.embed(EmbeddingRequest(("a", "b")))
    finally:
        await embedder.close()
