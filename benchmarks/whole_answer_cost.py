"""What reading a whole answer as a stream costs the gateway: CPU per answer from the simulated
Gemini (its own process), three ways:

    whole     ``Provider.complete()`` under ``total_s`` (how failover read whole answers before)
    stream    ``Provider.stream()`` read to its end, nothing else (the provider's share)
    failover  ``Provider.stream()`` through ``TimedStream``, added up by ``protocol.Assembly``
              (how ``Failover.complete`` reads a whole answer now)

All arms run in one process against one simulator, ``--concurrency`` requests at a time, in
rounds of rotating order, so drift in machine speed cancels; the CPU is this process's only
(``time.process_time``: the HTTP client, parsing, timers, assembly), not the simulator's.

    .venv/bin/python benchmarks/whole_answer_cost.py               # 9 rounds of 1,000 each
    .venv/bin/python benchmarks/whole_answer_cost.py --rounds 3 --requests 500

Not a test: numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import httpx
import uvloop

from standby.config import GeminiBackend, Timeouts
from standby.gateway.timed_stream import TimedStream
from standby.gctune import freeze_startup_objects
from standby.protocol import Assembly, ChatRequest, Completion, Message
from standby.providers.gemini import GeminiProvider
from standby.sim.background import free_port

LIMITS = Timeouts(connect_s=2, first_token_s=10, idle_s=10, total_s=60)
REQUEST = ChatRequest(messages=(Message("user", "Say hello in one short sentence."),))
Read = Callable[[GeminiProvider], Awaitable[Completion]]


async def whole(provider: GeminiProvider) -> Completion:
    async with asyncio.timeout(LIMITS.total_s):
        return await provider.complete(REQUEST)


async def streamed(provider: GeminiProvider) -> Completion:
    text = []
    async for delta in provider.stream(REQUEST):
        text.append(delta.text)
    return Completion("".join(text))


async def failover(provider: GeminiProvider) -> Completion:
    timed = TimedStream(provider.name, provider.stream(REQUEST), LIMITS)
    answer = Assembly(REQUEST.n, logprobs=REQUEST.logprobs)
    try:
        while not answer.add(await timed.next()):
            pass
    finally:
        await timed.aclose()
    return answer.completion()


async def cpu_per_answer(provider: GeminiProvider, read: Read, requests: int, conc: int) -> float:
    """Microseconds of this process's CPU per answer, ``conc`` answers at a time."""
    gate = asyncio.Semaphore(conc)

    async def one() -> Completion:
        async with gate:
            return await read(provider)

    began = time.process_time()
    answers = await asyncio.gather(*(one() for _ in range(requests)))
    spent = time.process_time() - began
    assert all(a.text for a in answers)
    return spent / requests * 1e6


async def measure(url: str, rounds: int, requests: int, conc: int) -> None:
    config = GeminiBackend(type="gemini", model="gemini-3.8-flash", base_url=url, timeouts=LIMITS)
    provider = GeminiProvider("gemini", config)
    await provider.start()
    try:
        a, b = await whole(provider), await failover(provider)
        same = (a.text, a.finish_reason, a.usage, a.model_version)
        assert same == (b.text, b.finish_reason, b.usage, b.model_version), (a, b)
        reads: dict[str, Read] = {"whole": whole, "stream": streamed, "failover": failover}
        arms: dict[str, list[float]] = {name: [] for name in reads}
        names = list(reads)
        for name in names:  # warm-up
            await cpu_per_answer(provider, reads[name], requests // 4, conc)
        for r in range(rounds):
            for name in names[r % 3 :] + names[: r % 3]:
                arms[name].append(await cpu_per_answer(provider, reads[name], requests, conc))
    finally:
        await provider.close()
    for name, values in arms.items():
        each = " ".join(f"{v:.0f}" for v in values)
        print(f"{name:8}: median {statistics.median(values):4.0f} us CPU per answer ({each})")
    base = statistics.median(arms["whole"])
    for name in ("stream", "failover"):
        ratios = [x / w for x, w in zip(arms[name], arms["whole"], strict=True)]
        print(
            f"{name}/whole by round: {' '.join(f'{r:.2f}' for r in ratios)}; median "
            f"{statistics.median(ratios):.2f}, {statistics.median(arms[name]) - base:+.0f} us"
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=9, help="rounds per arm (default 9)")
    p.add_argument("--requests", type=int, default=1000, help="answers per round (default 1000)")
    p.add_argument("--concurrency", type=int, default=16, help="at a time (default 16)")
    args = p.parse_args(argv)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "standby.cli", "--log-level", "warning"]
    sim = subprocess.Popen(
        [*cli, "sim", "gemini", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if sim.poll() is not None or time.monotonic() > deadline:
                    print("error: the simulated Gemini did not start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
        freeze_startup_objects()  # the collector tuned as in ``standby serve``
        uvloop.run(measure(url, args.rounds, args.requests, args.concurrency))
    finally:
        sim.terminate()
        sim.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
