"""Images, audio and PDFs end to end: the openai SDK sends them to a real gateway; the
simulated Gemini receives them as ``inlineData`` parts that google-genai's own types read back
with the same bytes and MIME types; an openai-type and a litellm backend configured with
``modalities`` get OpenAI content parts; a backend that cannot read them is skipped (reason
``unsupported``), and a route where none can is a 400."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from google.genai import types
from openai.types.chat import ChatCompletionUserMessageParam
from pydantic import TypeAdapter

from standby.config import parse_settings
from standby.sim.background import AiohttpServer
from tests.fixtures.gateway import FAST, ROUTE, GatewayServer
from tests.fixtures.media import PDF, PNG, WAV, b64, data_url
from tests.fixtures.sim import RunningSim

ALL_MEDIA = ["text", "image", "audio", "file"]
ASK = {"type": "text", "text": "Describe this."}
IMAGE = {"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}}
AUDIO = {"type": "input_audio", "input_audio": {"data": b64(WAV), "format": "wav"}}
PDF_PART = {
    "type": "file",
    "file": {"filename": "a.pdf", "file_data": data_url("application/pdf", PDF)},
}


@pytest.fixture(scope="module")
def gateway(gemini_sim: RunningSim) -> Iterator[GatewayServer]:
    surface = f"{gemini_sim.url}/v1beta/openai"  # Gemini's OpenAI-compatible surface
    backends: dict[str, Any] = {
        "gemini": {"type": "gemini", "model": ROUTE, "base_url": gemini_sim.url},
        "down": {"type": "gemini", "model": "error-503", "base_url": gemini_sim.url},
        "surface": {"type": "openai", "base_url": surface, "model": ROUTE, "modalities": ALL_MEDIA},
        "plain": {"type": "openai", "base_url": surface, "model": ROUTE},
        "litellm": {
            "type": "litellm",
            "model": f"openai/{ROUTE}",
            "api_base": surface,
            "api_key": "unused",
            "modalities": ["text", "image"],
        },
    }
    for backend in backends.values():
        backend["timeouts"] = dict(FAST)
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "backends": backends,
        "routes": {
            ROUTE: ["gemini"],
            "surface": ["surface"],
            "litellm": ["litellm"],
            "text-only": ["plain"],
            "primary-down": ["down", "plain"],
            "text-first": ["plain", "gemini"],
        },
        "breaker": {"failures": 1000},
        "capture": {"enabled": False},
        "media": {"allow_hosts": ["127.0.0.1"]},
    }
    server = GatewayServer(parse_settings(config, "test"))
    server.start(timeout=120)
    yield server
    server.stop()


def ask(gw: GatewayServer, *parts: Any, route: str = ROUTE, stream: bool = False) -> str:
    """The answer's text to one user turn of ``parts``, whole or streamed."""
    messages: Any = [{"role": "user", "content": list(parts)}]
    client = gw.client()
    if not stream:
        answer = client.chat.completions.create(model=route, messages=messages)
        assert answer.choices[0].finish_reason == "stop"
        return answer.choices[0].message.content or ""
    chunks = client.chat.completions.create(model=route, messages=messages, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def gemini_parts(sim: RunningSim) -> list[types.Part]:
    """The last user content Gemini received, read by google-genai's types (unknown fields
    forbidden, ``data`` decoded from base64)."""
    body = orjson.loads(sim.sim.received[-1])
    content = types.Content.model_validate_json(orjson.dumps(body["contents"][-1]))
    assert content.role == "user" and content.parts is not None
    return content.parts


def blobs(parts: list[types.Part]) -> list[tuple[str | None, bytes | None]]:
    return [(p.inline_data.mime_type, p.inline_data.data) for p in parts if p.inline_data]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_an_image_reaches_gemini_as_inline_data_after_the_text(
    gateway: GatewayServer, gemini_sim: RunningSim, stream: bool
) -> None:
    assert ask(gateway, ASK, IMAGE, stream=stream)
    parts = gemini_parts(gemini_sim)
    assert parts[0].text == "Describe this."
    assert blobs(parts) == [("image/png", PNG)] and parts[1].inline_data is not None


def test_an_image_url_is_fetched_and_sent_as_bytes(
    gateway: GatewayServer, gemini_sim: RunningSim, image_server: AiohttpServer
) -> None:
    url = {"type": "image_url", "image_url": {"url": f"{image_server.url}/cat.png"}}
    assert ask(gateway, url, ASK)
    parts = gemini_parts(gemini_sim)
    assert blobs(parts) == [("image/png", PNG)] and parts[1].text == "Describe this."


def test_a_pdf_and_audio_reach_gemini(gateway: GatewayServer, gemini_sim: RunningSim) -> None:
    sniffed = {"type": "file", "file": {"filename": "b.pdf", "file_data": b64(PDF)}}
    mp3 = {"type": "input_audio", "input_audio": {"data": b64(b"ID3fake"), "format": "mp3"}}
    assert ask(gateway, ASK, PDF_PART, sniffed, AUDIO, mp3)
    assert blobs(gemini_parts(gemini_sim)) == [
        ("application/pdf", PDF),
        ("application/pdf", PDF),
        ("audio/wav", WAV),
        ("audio/mp3", b"ID3fake"),
    ]


def test_usage_counts_the_media(gateway: GatewayServer) -> None:
    client = gateway.client()
    text_only = client.chat.completions.create(
        model=ROUTE, messages=[{"role": "user", "content": [ASK]}]
    )
    with_image = client.chat.completions.create(
        model=ROUTE, messages=[{"role": "user", "content": [ASK, IMAGE]}]
    )
    assert text_only.usage is not None and with_image.usage is not None
    assert with_image.usage.prompt_tokens == text_only.usage.prompt_tokens + 258


USER_MESSAGE: TypeAdapter[ChatCompletionUserMessageParam] = TypeAdapter(
    ChatCompletionUserMessageParam
)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("route", ["surface", "litellm"])
def test_openai_style_backends_get_content_parts(
    gateway: GatewayServer, gemini_sim: RunningSim, route: str, stream: bool
) -> None:
    parts = [ASK, IMAGE] if route == "litellm" else [ASK, IMAGE, AUDIO, PDF_PART]
    assert ask(gateway, *parts, route=route, stream=stream)
    message = orjson.loads(gemini_sim.sim.received[-1])["messages"][-1]
    USER_MESSAGE.validate_python(message)  # the openai SDK's own request type
    assert message["role"] == "user"
    sent = message["content"]
    assert sent[0] == {"type": "text", "text": "Describe this."}
    assert sent[1]["image_url"]["url"] == IMAGE["image_url"]["url"]  # type: ignore[index]
    if route == "surface":
        assert sent[2] == AUDIO
        assert sent[3] == PDF_PART


def test_a_route_that_cannot_read_images_is_a_400(
    gateway: GatewayServer, gemini_sim: RunningSim
) -> None:
    before = gemini_sim.sim.requests
    with pytest.raises(openai.BadRequestError) as e:
        ask(gateway, ASK, IMAGE, route="text-only")
    assert e.value.code == "unsupported"
    assert "'plain' does not support image input" in str(e.value.body)
    assert gemini_sim.sim.requests == before  # the backend was never called
    assert ask(gateway, ASK, route="text-only")  # text still goes through


def test_primary_down_and_a_text_only_fallback(gateway: GatewayServer) -> None:
    """Text fails over to the fallback; an image cannot, and the 503 says why for each
    backend (the request is valid: it can be answered once the primary is back)."""
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(
        model="primary-down", messages=[{"role": "user", "content": "Hello"}]
    )
    assert raw.headers["x-standby-backend"] == "plain"
    with pytest.raises(openai.InternalServerError) as e:
        ask(gateway, ASK, IMAGE, route="primary-down")
    assert e.value.status_code == 503
    body = str(e.value.body)
    assert "down" in body and "'plain' does not support image input" in body


def test_a_skipped_text_only_backend_is_counted(gateway: GatewayServer) -> None:
    def skips() -> float:
        wanted = ('route="text-first"', 'reason="unsupported"', 'to_backend="gemini"')
        for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
            if line.startswith("standby_fallbacks_total{") and all(w in line for w in wanted):
                return float(line.split()[-1])
        return 0.0

    before = skips()
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="text-first", messages=[{"role": "user", "content": [ASK, IMAGE]}]
    )
    assert raw.headers["x-standby-backend"] == "gemini"
    assert raw.headers["x-standby-fallback-reason"] == "unsupported"
    assert skips() == before + 1
