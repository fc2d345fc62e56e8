"""Each HTTP provider reads a backend's answer only up to its ``limits``, against the hostile
upstream of tests/fixtures/hostile_upstream.py (real sockets on 127.0.0.1): over a cap is
``UpstreamTooLarge`` naming the setting, and the server is cut off after about that much.
The gateway's side (failover, metrics, memory) is tests/gateway/test_upstream_limits.py."""

from __future__ import annotations

from typing import Any

import pytest

from standby.config import (
    EmbeddingConfig,
    GeminiBackend,
    OpenAIBackend,
    TGIBackend,
    UpstreamLimits,
)
from standby.embeddings import EmbeddingRequest
from standby.errors import UpstreamProtocolError, UpstreamStatusError, UpstreamTooLarge
from standby.providers.base import Provider
from standby.providers.gemini import GeminiProvider
from standby.providers.http import MAX_ERROR_BODY
from standby.providers.openai_compat import OpenAICompatProvider
from standby.providers.openai_embed import OpenAIEmbedder
from standby.providers.tgi import TGIProvider
from tests.fixtures.hostile_upstream import LONG_TEXT, Hostile
from tests.fixtures.providers import Start, collect, failure, joined

MiB = 1 << 20
LIMITS = UpstreamLimits(max_body_bytes=2 * MiB, max_event_bytes=1 * MiB, max_stream_bytes=3 * MiB)
# What the server may have written past a cap before the gateway hung up: socket buffers on
# both sides and one of its 64 KiB (or 4 MiB compressed) blocks.
SLACK = 8 * MiB


async def openai(started: Start, hostile: Hostile, attack: str) -> OpenAICompatProvider:
    config = OpenAIBackend(
        type="openai", base_url=f"{hostile.url}/{attack}/v1", model="m", limits=LIMITS
    )
    return await started(OpenAICompatProvider("hostile", config))


async def too_large(p: Provider, *, stream: bool, field: str, limit: int) -> None:
    err = await failure(UpstreamTooLarge, p, stream=stream)
    assert err.reason == "too_large" and err.failover and err.counts
    assert f"over the limit of {limit} bytes (backends.hostile.limits.{field})" in str(err)


@pytest.mark.parametrize(
    ("attack", "stream", "field", "limit"),
    [
        ("body", False, "max_body_bytes", LIMITS.max_body_bytes),
        ("body-length", False, "max_body_bytes", LIMITS.max_body_bytes),
        ("gzip", False, "max_body_bytes", LIMITS.max_body_bytes),
        ("line", True, "max_event_bytes", LIMITS.max_event_bytes),
        ("events", True, "max_stream_bytes", LIMITS.max_stream_bytes),
    ],
)
async def test_openai_backend_stops_reading_at_the_cap(
    started: Start, hostile_upstream: Hostile, attack: str, stream: bool, field: str, limit: int
) -> None:
    p = await openai(started, hostile_upstream, attack)
    await too_large(p, stream=stream, field=field, limit=limit)
    assert hostile_upstream.sent[attack] < limit + SLACK
    if attack == "body-length":  # refused on its Content-Length: nothing of it is read
        assert hostile_upstream.sent[attack] < SLACK


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_an_endless_error_body_is_read_up_to_64_KiB(
    started: Start, hostile_upstream: Hostile, stream: bool
) -> None:
    p = await openai(started, hostile_upstream, "error")
    err = await failure(UpstreamStatusError, p, stream=stream)
    assert err.status == 500 and err.reason == "server_error"
    assert len(err.upstream_message) <= 300
    assert hostile_upstream.sent["error"] < MAX_ERROR_BODY + SLACK


async def test_an_event_longer_than_a_network_read_arrives_whole(
    started: Start, hostile_upstream: Hostile
) -> None:
    """The 1 MiB event comes in many reads without a newline: joined once, under the cap."""
    p = await openai(started, hostile_upstream, "long-event")
    assert joined(await collect(p)) == LONG_TEXT


async def test_gemini_backend_stops_reading_an_endless_line(
    started: Start, hostile_upstream: Hostile
) -> None:
    config = GeminiBackend(
        type="gemini", model="m", base_url=f"{hostile_upstream.url}/line", limits=LIMITS
    )
    p = await started(GeminiProvider("hostile", config))
    await too_large(p, stream=True, field="max_event_bytes", limit=LIMITS.max_event_bytes)
    await too_large(p, stream=False, field="max_body_bytes", limit=LIMITS.max_body_bytes)


async def test_embeddings_backend_stops_reading_an_endless_body(
    started: Start, hostile_upstream: Hostile
) -> None:
    config = OpenAIBackend(
        type="openai",
        base_url=f"{hostile_upstream.url}/body/v1",
        model="m",
        embeddings=EmbeddingConfig(space="s"),
        limits=LIMITS,
    )
    p = await started(OpenAIEmbedder("hostile", config))
    with pytest.raises(UpstreamTooLarge, match=r"limits\.max_body_bytes"):
        await p.embed(EmbeddingRequest(texts=["a"], dimensions=None))


@pytest.mark.parametrize(
    ("attack", "stream", "field", "limit"),
    [
        ("body", False, "max_body_bytes", LIMITS.max_body_bytes),
        ("line", True, "max_event_bytes", LIMITS.max_event_bytes),
        ("tgi-events", True, "max_stream_bytes", LIMITS.max_stream_bytes),
    ],
)
async def test_tgi_backend_stops_reading_at_the_cap(
    started: Start, hostile_upstream: Hostile, attack: str, stream: bool, field: str, limit: int
) -> None:
    config = TGIBackend(type="tgi", base_url=f"{hostile_upstream.url}/{attack}", limits=LIMITS)
    p = await started(TGIProvider("hostile", config))
    await too_large(p, stream=stream, field=field, limit=limit)
    assert hostile_upstream.sent[attack] < limit + SLACK


async def test_tgi_backend_refuses_a_compressed_answer(
    started: Start, hostile_upstream: Hostile
) -> None:
    """The client asks for identity; a gzip body could inflate past any count of wire bytes."""
    config = TGIBackend(type="tgi", base_url=f"{hostile_upstream.url}/gzip", limits=LIMITS)
    p = await started(TGIProvider("hostile", config))
    err: Any = await failure(UpstreamProtocolError, p, stream=False)
    assert "compressed answer (gzip)" in str(err)
