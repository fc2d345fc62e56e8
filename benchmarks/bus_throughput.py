"""Event bus throughput: ``publish_many`` in batches of 100, then consume + ack, per backend.

    .venv/bin/python benchmarks/bus_throughput.py                 # SQLite (tmp file) and Redis
    .venv/bin/python benchmarks/bus_throughput.py --seconds 2 --redis redis://127.0.0.1:6379/0

Each phase runs for at most ``--seconds`` (default 4), so a run takes under 30 s. Events are
typical ``inference.completed`` events (~2.3 KB encoded). Redis keys live under a unique prefix
that is deleted afterwards. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import time
import uuid
from pathlib import Path

from standby.store import (
    Bus,
    ChatMessage,
    InferenceCompleted,
    InferenceCompletedData,
    encode_event,
    open_bus,
)

TOPIC = "inference.completed"
BATCH = 100


def event(n: int) -> InferenceCompleted:
    return InferenceCompleted(
        source="benchmark",
        data=InferenceCompletedData(
            request_id=f"req-{n}",
            route="gemini-3.8-flash",
            backend="gemini",
            provenance="primary",
            model="gemini-3.8-flash",
            messages=[
                ChatMessage(role="system", content="You are a helpful assistant. " * 4),
                ChatMessage(role="user", content=f"Question {n}: " + "explain this please " * 20),
            ],
            params={"temperature": 0.7, "max_tokens": 512},
            response="Here is a careful answer. " * 50,
            finish_reason="stop",
            latency_s=0.84,
            ttft_s=0.21,
            key_id="0123456789abcdef",
        ),
    )


async def measure(name: str, bus: Bus, seconds: float) -> None:
    batches = [[event(b * BATCH + i) for i in range(BATCH)] for b in range(20)]
    published = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        await bus.publish_many(TOPIC, batches[(published // BATCH) % len(batches)])
        published += BATCH
    pub_s = time.perf_counter() - started

    consumed = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds and consumed < published:
        got = await bus.consume(TOPIC, "bench", "c1", count=BATCH)
        await bus.ack(TOPIC, "bench", [d.id for d in got])
        consumed += len(got)
    con_s = time.perf_counter() - started
    print(
        f"{name:7} publish_many({BATCH}): {published / pub_s:>9,.0f} events/s "
        f"({published:,} in {pub_s:.1f}s)   consume+ack({BATCH}): "
        f"{consumed / con_s:>9,.0f} events/s ({consumed:,} in {con_s:.1f}s)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="limit per phase")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="'' to skip")
    args = parser.parse_args()

    sample = event(0)
    size = len(encode_event(sample))
    started = time.perf_counter()
    for _ in range(2000):
        encode_event(sample)
    encode_rate = 2000 / (time.perf_counter() - started)
    print(f"python {platform.python_version()} on {platform.machine()}; event {size} bytes")
    print(f"encode alone: {encode_rate:,.0f} events/s")

    with tempfile.TemporaryDirectory() as tmp:
        async with open_bus(f"sqlite:///{Path(tmp) / 'events.db'}") as bus:
            await measure("sqlite", bus, args.seconds)
    if args.redis:
        prefix = f"standby-bench:{uuid.uuid4().hex}:"
        sep = "&" if "?" in args.redis else "?"
        async with open_bus(f"{args.redis}{sep}prefix={prefix}&maxlen=0") as bus:
            try:
                await measure("redis", bus, args.seconds)
            finally:
                from redis.asyncio import Redis

                client = Redis.from_url(args.redis)
                keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
                if keys:
                    await client.delete(*keys)
                await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
