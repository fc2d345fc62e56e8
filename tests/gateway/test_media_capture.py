"""Capture of requests with media: each image, clip or file is kept as its kind, type, size and
digest (its bytes only with ``media.keep_in_capture``), the text around it is still redacted,
and such an event never becomes a training pair (the pair would lose what the prompt showed)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from standby.data.materializer import classify
from tests.fixtures.captured import stored
from tests.fixtures.gateway import ROUTE, StartGateway, base_config
from tests.fixtures.media import PDF, PNG, b64, data_url
from tests.fixtures.sim import RunningSim

CONTENT: Any = [
    {"type": "text", "text": "Mail alice@example.com what this shows."},
    {"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}},
    {"type": "file", "file": {"filename": "a.pdf", "file_data": b64(PDF)}},
]


@pytest.mark.parametrize("keep", [False, True], ids=["digests", "kept"])
async def test_media_is_captured_as_digests_unless_kept(
    sim: RunningSim, tmp_path: Path, start_gateway: StartGateway, keep: bool
) -> None:
    db = tmp_path / "events.db"
    config = base_config(sim.url, None)
    config["capture"] = {"enabled": True, "bus": f"sqlite:///{db}", "flush_interval_s": 0.05}
    config["media"] = {"keep_in_capture": keep}
    gw = start_gateway(config)
    client = gw.client()
    messages: Any = [{"role": "user", "content": CONTENT}]
    client.chat.completions.create(model=ROUTE, messages=messages)
    list(client.chat.completions.create(model=ROUTE, messages=messages, stream=True))
    gw.stop()

    events = await stored(db)
    assert len(events) == 2
    for event in events:
        (message,) = event.data.messages
        assert message.content == "Mail [EMAIL] what this shows."
        assert message.media is not None
        got = [m.model_dump(exclude_none=True) for m in message.media]
        want: list[dict[str, Any]] = [
            {"kind": "image", "mime_type": "image/png", "bytes": len(PNG), "digest": _sha(PNG)},
            {
                "kind": "file",
                "mime_type": "application/pdf",
                "bytes": len(PDF),
                "digest": _sha(PDF),
            },
        ]
        if keep:
            want[0]["data"], want[1]["data"] = b64(PNG), b64(PDF)
        assert got == want
        assert classify(event) == "media"


async def test_text_only_events_are_unchanged(
    sim: RunningSim, tmp_path: Path, start_gateway: StartGateway
) -> None:
    db = tmp_path / "events.db"
    config = base_config(sim.url, None)
    config["capture"] = {"enabled": True, "bus": f"sqlite:///{db}", "flush_interval_s": 0.05}
    gw = start_gateway(config)
    text: Any = [{"type": "text", "text": "Just words."}]
    gw.client().chat.completions.create(model=ROUTE, messages=[{"role": "user", "content": text}])
    gw.stop()
    (event,) = await stored(db)
    assert event.data.messages[0].media is None
    assert "media" not in event.data.model_dump_json()
    assert classify(event) != "media"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
