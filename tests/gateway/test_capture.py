"""Capture: every answer becomes an inference.completed event on the real SQLite bus, with its
provenance; opt-outs are honoured; secrets are redacted before anything reaches the file; a full
queue drops (and counts) instead of blocking a client."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.fixtures.captured import stored
from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

HELLO = [{"role": "user", "content": "Capture this please."}]


def capturing(url: str, db: Path, tiny: Path | None = None, **capture: Any) -> dict[str, Any]:
    config = base_config(url, tiny)
    config["capture"] = {
        "enabled": True,
        "bus": f"sqlite:///{db}",
        "flush_interval_s": 0.05,
        **capture,
    }
    return config


def database_bytes(folder: Path) -> bytes:
    """The SQLite file and its WAL / shared-memory files, as raw bytes."""
    return b"".join(p.read_bytes() for p in folder.iterdir() if p.name.startswith("events.db"))


def counter(gw: GatewayServer, outcome: str) -> float:
    for line in httpx.get(f"{gw.url}/metrics").text.splitlines():
        if line.startswith(f'standby_capture_events_total{{outcome="{outcome}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no capture counter for {outcome}")


async def test_answers_are_captured_with_provenance(
    sim: RunningSim, tiny_model_dir: Path, tmp_path: Path, start_gateway: StartGateway
) -> None:
    db = tmp_path / "events.db"
    gw = start_gateway(capturing(sim.url, db, tiny_model_dir), breaker={"cooldown_s": 60})
    client = gw.client()
    primary = client.chat.completions.create(model=ROUTE, messages=HELLO, temperature=0.3)
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model=ROUTE, messages=HELLO, stream=True)
        if c.choices
    )
    sim.sim.set_fault("cut-3")
    list(client.chat.completions.create(model=ROUTE, messages=HELLO, stream=True))
    sim.sim.set_fault("error-503")
    client.chat.completions.create(model=ROUTE, messages=HELLO)
    gw.stop()  # a clean stop drains the queue

    events = await stored(db)
    got = [(e.data.provenance, e.data.backend, e.data.stream) for e in events]
    assert got == [
        ("primary", "gemini", False),
        ("primary", "gemini", True),
        ("stitched", "gemma", True),
        ("fallback", "gemma", False),
    ]
    first = events[0].data
    assert first.response == primary.choices[0].message.content
    assert events[1].data.response == streamed
    assert first.messages[0].content == HELLO[0]["content"]
    assert first.params == {"temperature": 0.3}
    assert first.finish_reason == "stop" and first.usage.completion_tokens > 0
    assert events[3].data.fallback_reason == "server_error"
    assert events[2].data.fallback_reason == "mid_stream"
    assert len({e.id for e in events}) == 4


async def test_opt_out_header_and_route_switch(
    sim: RunningSim, tmp_path: Path, start_gateway: StartGateway
) -> None:
    db = tmp_path / "events.db"
    config = capturing(sim.url, db)
    config["routes"]["private"] = {"backends": ["gemini"], "capture": False}
    gw = start_gateway(config)
    client = gw.client()
    client.chat.completions.create(model=ROUTE, messages=HELLO)
    client.chat.completions.create(
        model=ROUTE, messages=HELLO, extra_headers={"x-standby-capture": "off"}
    )
    client.chat.completions.create(model="private", messages=HELLO)
    assert counter(gw, "filtered") == 2
    gw.stop()
    assert [e.data.route for e in await stored(db)] == [ROUTE]


SECRETS = {
    "alice@example.com": "[EMAIL]",
    "4111 1111 1111 1111": "[CARD]",
    "+1 415 555 0134": "[PHONE]",
    "Bearer abcdefghijklmnop1234": "[BEARER]",
    "sk-proj-ABCDEFGHIJKLMNOPQRSTUV": "[API_KEY]",
    "AIzaSyA1234567890abcdefghijklmnopqrstu": "[API_KEY]",
}


async def test_no_redacted_value_reaches_the_database_file(
    sim: RunningSim, tmp_path: Path, start_gateway: StartGateway
) -> None:
    db = tmp_path / "events.db"
    gw = start_gateway(capturing(sim.url, db, redact_patterns=[r"ACME-\d{6}"]))
    prompt = "Reach me: " + ", ".join(SECRETS) + ", order ACME-123456."
    answer = gw.client().chat.completions.create(
        model=ROUTE, messages=[{"role": "user", "content": prompt}]
    )
    # The simulated answer quotes the prompt, so the response side is redacted too.
    assert "alice@example.com" in (answer.choices[0].message.content or "")
    gw.stop()
    raw = database_bytes(tmp_path)
    for secret in [*SECRETS, "ACME-123456"]:
        assert secret.encode() not in raw, secret
    message = (await stored(db))[0].data.messages[0].content
    for secret, label in SECRETS.items():
        assert secret not in message and label in message
    assert "[REDACTED]" in message


async def test_full_queue_drops_and_counts_but_never_fails_a_client(
    sim: RunningSim, tmp_path: Path, start_gateway: StartGateway
) -> None:
    db = tmp_path / "events.db"
    gw = start_gateway(capturing(sim.url, db, queue_size=1, flush_interval_s=2, batch_size=1000))
    client = gw.async_client()
    results = await asyncio.gather(
        *(client.chat.completions.create(model=ROUTE, messages=HELLO) for _ in range(40))
    )
    await client.close()
    assert len(results) == 40  # every client was answered
    dropped = counter(gw, "dropped")
    gw.stop()
    written = len(await stored(db))
    assert dropped > 0
    assert written + dropped == 40


def test_bad_bus_url_stops_start_up_with_one_line(tmp_path: Path) -> None:
    config = capturing("http://127.0.0.1:9", tmp_path / "x.db")
    config["capture"]["bus"] = "kafka://nowhere"
    path = tmp_path / "standby.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run(
        [sys.executable, "-m", "standby.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "kafka://nowhere" in run.stderr, run.stderr


async def test_oversized_answer_is_dropped_alone(
    sim: RunningSim, tmp_path: Path, start_gateway: StartGateway
) -> None:
    """An event over the bus's 1 MiB limit is counted as dropped; the rest of its batch is
    written and the client is answered."""
    db = tmp_path / "events.db"
    config = capturing(sim.url, db, flush_interval_s=0.5)
    config["server"]["max_body_bytes"] = 4 << 20
    gw = start_gateway(config)
    client = gw.async_client()
    huge = [{"role": "user", "content": "x " * (700 << 10)}]
    answers = await asyncio.gather(
        client.chat.completions.create(model=ROUTE, messages=HELLO),
        client.chat.completions.create(model=ROUTE, messages=huge),
        client.chat.completions.create(model=ROUTE, messages=HELLO),
    )
    await client.close()
    assert all(a.choices[0].message.content for a in answers)
    for _ in range(100):  # the batch is written after the flush window
        if counter(gw, "written") + counter(gw, "dropped") == 3:
            break
        await asyncio.sleep(0.1)
    assert counter(gw, "dropped") == 1
    assert counter(gw, "written") == 2
    gw.stop()
    assert len(await stored(db)) == 2


async def test_full_disk_counts_drops_and_never_fails_a_client(
    sim: RunningSim, tmp_path: Path, start_gateway: StartGateway
) -> None:
    db = tmp_path / "events.db"
    config = capturing(sim.url, db)
    config["capture"]["bus"] = f"sqlite:///{db}?max_bytes=65536"  # a disk that fills up
    gw = start_gateway(config)
    client = gw.async_client()
    big = [{"role": "user", "content": "y " * 20_000}]
    for _ in range(6):
        answer = await client.chat.completions.create(model=ROUTE, messages=big)
        assert answer.choices[0].message.content
    await client.close()
    # Each failing batch is tried three times with back-off before it counts as dropped, and
    # the answers may have been split over several batches: wait until all six are accounted.
    for _ in range(100):
        if counter(gw, "written") + counter(gw, "dropped") == 6:
            break
        await asyncio.sleep(0.1)
    assert counter(gw, "dropped") > 0
    assert counter(gw, "written") + counter(gw, "dropped") == 6


def writer_pids() -> set[int]:
    """The capture writer processes started by this test process (its gateways' children)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and b"standby.gateway.capture_writer" in cmdline:
            pids.add(int(entry.name))
    return pids


async def test_a_killed_writer_is_restarted_and_its_losses_counted(
    sim: RunningSim, tmp_path: Path, start_gateway: StartGateway
) -> None:
    """SIGKILL of the writer process: clients never notice, a new writer takes over, and every
    answer is either written or counted as dropped."""
    db = tmp_path / "events.db"
    before = writer_pids()
    gw = start_gateway(capturing(sim.url, db))
    (first,) = writer_pids() - before
    client = gw.async_client()

    async def answer(n: int) -> int:
        answers = await asyncio.gather(
            *(client.chat.completions.create(model=ROUTE, messages=HELLO) for _ in range(n))
        )
        return sum(1 for a in answers if a.choices[0].message.content)

    async def accounted(n: int) -> float:
        for _ in range(100):
            if counter(gw, "written") + counter(gw, "dropped") == n:
                break
            await asyncio.sleep(0.1)
        return counter(gw, "written")

    answered = await answer(20)
    assert await accounted(20) == 20
    os.kill(first, signal.SIGKILL)
    answered += await answer(20)  # queued while the writer restarts
    written = await accounted(40)
    await client.close()
    assert answered == 40
    assert written + counter(gw, "dropped") == 40
    assert written > 20  # the new writer wrote what was queued meanwhile
    (second,) = writer_pids() - before
    assert second != first
    gw.stop()
    assert len(await stored(db)) == written
    assert not writer_pids() - before  # a clean stop ends the writer too
