"""The capture writer process on its own, fed frames over its real stdin: it redacts, validates
and writes each answer, drops (and reports) what cannot become a valid event, one answer or one
unreadable frame at a time, and never lets a secret into its logs or the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from standby.config import CaptureConfig
from standby.gateway.capture import WriterProcess, payload
from standby.gateway.capture_writer import batch_frame, read_frame
from standby.store import MAX_EVENT_BYTES
from tests.gateway.test_capture import database_bytes, stored

SECRET = "carol@example.org"


def answer(**change: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request_id": "r1",
        "route": "gemini-2.5-flash",
        "backend": "gemini",
        "provenance": "primary",
        "model": "gemini-2.5-flash",
        "model_version": None,
        "messages": [{"role": "user", "content": f"Write to {SECRET} please."}],
        "params": {"temperature": 0.2},
        "response": f"Sure, {SECRET} it is.",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 7, "completion_tokens": 5},
        "latency_s": 0.25,
        "ttft_s": 0.1,
        "fallback_reason": None,
        "stream": False,
        "key_id": "0123456789abcdef",
    }
    return {**data, **change}


async def run_writer(db: Path, frames: list[bytes]) -> tuple[set[int], int, list[str]]:
    """Start a writer on ``db``, send ``frames``, close its stdin and read every report:
    (frames reported, answers written, log lines)."""
    writer = await WriterProcess.spawn(CaptureConfig(bus=f"sqlite:///{db}"))
    for raw in frames:
        writer.stdin.write(raw)
    writer.stdin.close()
    seqs: set[int] = set()
    written = 0
    logs: list[str] = []
    while (report := await read_frame(writer.stdout)) is not None:
        kind, done, count, lines = report
        assert kind == "done"
        seqs.update(done)
        written += count
        logs += [message for _, message in lines]
    assert await writer.proc.wait() == 0
    return seqs, written, logs


def frame_of(seq: int, answers: list[Any]) -> bytes:
    return batch_frame(seq, payload([orjson.dumps(a) for a in answers]))


async def test_each_answer_is_redacted_validated_and_written(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    frames = [frame_of(0, [answer(request_id=f"r{i}") for i in range(3)])]
    seqs, written, logs = await run_writer(db, frames)
    assert (seqs, written, logs) == ({0}, 3, [])
    events = await stored(db)
    assert sorted(e.data.request_id for e in events) == ["r0", "r1", "r2"]
    event = events[0]
    assert event.source == "standby/gateway"
    assert event.data.messages[0].content == "Write to [EMAIL] please."
    assert event.data.response == "Sure, [EMAIL] it is."
    assert event.data.params == {"temperature": 0.2}
    assert SECRET.encode() not in database_bytes(tmp_path)


async def test_bad_answers_are_dropped_alone_and_said_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    bad = [
        answer(request_id="bad-provenance", provenance="guessed"),
        answer(request_id="no-messages", messages=[]),
        answer(request_id="number-content", messages=[{"role": "user", "content": 42}]),
        42,
        answer(request_id="huge", response="x" * MAX_EVENT_BYTES),
    ]
    frames = [
        frame_of(0, [answer(request_id="good-1"), *bad]),
        batch_frame(1, b'{"at": 1, "answers": [truncated'),
        batch_frame(2, b'{"answers": []}'),
        frame_of(3, [answer(request_id="good-2")]),
    ]
    seqs, written, logs = await run_writer(db, frames)
    assert seqs == {0, 1, 2, 3}  # every frame is reported: the gateway counts the rest dropped
    assert written == 2
    assert sorted(e.data.request_id for e in await stored(db)) == ["good-1", "good-2"]
    dropped = [line for line in logs if line.startswith("capture: event ") and " dropped: " in line]
    assert len(dropped) == len(bad)
    assert any(line.startswith("capture: event bad-provenance dropped: ") for line in dropped)
    assert any("provenance" in line for line in dropped)
    assert any("bytes encoded, over the" in line for line in dropped)
    assert sum(line.startswith("capture: frame 1 dropped: unreadable") for line in logs) == 1
    assert sum(line.startswith("capture: frame 2 dropped: unreadable") for line in logs) == 1
    assert all("\n" not in line and SECRET not in line for line in logs)
