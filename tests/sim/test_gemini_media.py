"""The simulated Gemini reads ``inlineData`` parts as Gemini does: google-genai sends images,
audio and PDFs with ``Part.from_bytes`` and gets an answer whose usage counts them; a MIME type
Gemini does not read or data that is not base64 is Gemini's 400."""

from __future__ import annotations

import httpx
import orjson
import pytest
from google import genai
from google.genai import errors, types

from tests.fixtures.media import PDF, PNG, WAV
from tests.fixtures.sim import RunningSim

MODEL = "gemini-2.5-flash"


def test_genai_sends_media_and_the_usage_counts_it(client: genai.Client, sim: RunningSim) -> None:
    text = client.models.generate_content(model=MODEL, contents=["Describe."])
    media = client.models.generate_content(
        model=MODEL,
        contents=[
            "Describe.",
            types.Part.from_bytes(data=PNG, mime_type="image/png"),
            types.Part.from_bytes(data=WAV, mime_type="audio/wav"),
            types.Part.from_bytes(data=PDF, mime_type="application/pdf"),
        ],
    )
    assert media.text == text.text  # the simulator answers the words, not the pictures
    assert text.usage_metadata is not None and media.usage_metadata is not None
    assert (
        media.usage_metadata.prompt_token_count
        == (text.usage_metadata.prompt_token_count or 0) + 3 * 258
    )
    body = orjson.loads(sim.sim.received[-1])
    parts = types.Content.model_validate_json(orjson.dumps(body["contents"][0])).parts
    assert parts is not None
    assert [(p.inline_data.mime_type, p.inline_data.data) for p in parts if p.inline_data] == [
        ("image/png", PNG),
        ("audio/wav", WAV),
        ("application/pdf", PDF),
    ]


def test_a_type_gemini_does_not_read_is_a_400(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_content(
            model=MODEL, contents=[types.Part.from_bytes(data=b"BM", mime_type="image/bmp")]
        )
    assert e.value.code == 400 and "Unsupported MIME type: image/bmp" in str(e.value)


def test_data_that_is_not_base64_is_a_400(sim: RunningSim) -> None:
    blob = {"inlineData": {"mimeType": "image/png", "data": "not base64!"}}
    body = {"contents": [{"role": "user", "parts": [{"text": "x"}, blob]}]}
    r = httpx.post(f"{sim.url}/v1beta/models/{MODEL}:generateContent", json=body)
    assert r.status_code == 400
    assert "contents[0].parts[1].inline_data.data" in r.json()["error"]["message"]
    assert "Base64 decoding failed" in r.json()["error"]["message"]
