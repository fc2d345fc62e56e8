"""Lifecycle of the simulated Gemini: ``serve()`` as the CLI runs it, and shutdown while
requests hang."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import aiohttp
import orjson
import pytest

from standby.sim.background import AiohttpServer, free_port
from standby.sim.gemini import SimGemini, build_app


async def test_stop_does_not_wait_for_hung_or_sleeping_requests() -> None:
    server = AiohttpServer(build_app(SimGemini())).start()
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    async with aiohttp.ClientSession() as s:
        hung = [
            asyncio.ensure_future(
                s.post(f"{server.url}/v1beta/models/{m}:generateContent", json=body)
            )
            for m in ("hang", "slow-60000")
        ]
        await asyncio.sleep(0.2)
        start = time.monotonic()
        await asyncio.to_thread(server.stop)
        assert time.monotonic() - start < 3
        for request in hung:
            with pytest.raises(aiohttp.ClientError):
                await request


async def test_serve_runs_until_interrupted() -> None:
    port = free_port()
    code = f"from standby.sim.gemini import serve; serve('127.0.0.1', {port}, api_key='k')"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        banner = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert f"SIMULATED Gemini (not Google) on http://127.0.0.1:{port}".encode() in banner
        url = f"http://127.0.0.1:{port}/v1beta/models/m:generateContent"
        body = orjson.dumps({"contents": [{"parts": [{"text": "hi"}]}]})
        async with aiohttp.ClientSession() as s:
            async with s.post(url, data=body, headers={"x-goog-api-key": "k"}) as ok:
                assert ok.status == 200
            async with s.post(url, data=body) as missing:
                assert missing.status == 401
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
