"""The floor: the smallest useful Python pass-through proxy, for benchmarks only.

aiohttp server + one shared aiohttp ``ClientSession`` on uvloop. It forwards the request body
unchanged to ``UPSTREAM`` (an OpenAI-compatible ``/chat/completions``) and relays the answer:
a whole body as one response, a server-sent-event stream chunk by chunk as it arrives. No
parsing, no auth, no metrics, no failover: whatever a real gateway costs above this is its own
work. Not part of the product.

    python benchmarks/floor_proxy.py --port 8301 \
        --upstream http://127.0.0.1:8300/v1beta/openai/chat/completions
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)
_FORWARDED = ("Content-Type", "Authorization")


async def _open_session(app: web.Application) -> None:
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    app[SESSION] = aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False
    )


async def _close_session(app: web.Application) -> None:
    await app[SESSION].close()


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {k: v for k in _FORWARDED if (v := request.headers.get(k)) is not None}
    session = request.app[SESSION]
    async with session.post(request.app[UPSTREAM], data=body, headers=headers) as upstream:
        content_type = upstream.headers.get("Content-Type", "application/json")
        if not content_type.startswith("text/event-stream"):
            return web.Response(
                body=await upstream.read(),
                status=upstream.status,
                headers={"Content-Type": content_type},
            )
        resp = web.StreamResponse(
            status=upstream.status,
            headers={"Content-Type": content_type, "Cache-Control": "no-cache"},
        )
        try:
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
        except ConnectionResetError:  # the client went away mid-stream (wrk stopping)
            pass
        return resp


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def build_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[UPSTREAM] = upstream
    app.on_startup.append(_open_session)
    app.on_cleanup.append(_close_session)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="full URL of /chat/completions")
    args = parser.parse_args()
    loop: asyncio.AbstractEventLoop | None = None
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        pass
    else:
        loop = uvloop.new_event_loop()
    web.run_app(
        build_app(args.upstream),
        host=args.host,
        port=args.port,
        access_log=None,
        shutdown_timeout=1.0,
        loop=loop,
        print=None,
    )


if __name__ == "__main__":
    main()
