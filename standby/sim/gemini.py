"""SIMULATED Gemini server with fault injection: NOT Google's service and NOT a real model.

It speaks the real Gemini REST protocol (``/v1beta/models/{m}:generateContent``,
``:streamGenerateContent``, Google's error bodies) and Gemini's OpenAI-compatible surface
(``/v1beta/openai/chat/completions``), answers deterministically (:mod:`standby.sim.answers`),
and misbehaves on demand (:mod:`standby.sim.faults`): a model named like a fault spec
(``error-429``, ``cut-3``, ...) always shows that fault; every other model shows the fault set
with ``POST /_sim/fault``; the next calls can be scripted to return given raw texts or faults
(:mod:`standby.sim.script`, ``POST /_sim/script``). Function calling, thought signatures and
Gemini 3's 400 for a missing one are in :mod:`standby.sim.gemini_tools`. The gateway tests, the
demo, failover drills and benchmarks use it.

Hot path: aiohttp + orjson, no pydantic; parsed requests are cached by body, answers by
request, and rendered bodies by answer, so a repeated request costs little more than aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from typing import Any

import orjson
from aiohttp import web

from standby.sim import gemini_embed, gemini_openai
from standby.sim.answers import Answer, SimRequest
from standby.sim.faults import OK, Fault, parse_fault
from standby.sim.gemini_config import config_error
from standby.sim.gemini_native import NATIVE, parse_native
from standby.sim.gemini_tools import scripted_reply, signature_error
from standby.sim.script import Reply, Script, parse_reply
from standby.sim.surface import BadRequest, Outcome, Surface, Turn, json_response

_FLAKY_503 = Fault("flaky", "error", 503)
RECEIVED = 16
_METHODS = frozenset({"generateContent", "streamGenerateContent"})


class SimGemini:
    """State of one simulated server: the fault for ordinary models, request counters, and an
    optional API key (``None``: any key or none is accepted)."""

    def __init__(self, api_key: str | None = None, fault: str = "ok") -> None:
        self.api_key = api_key
        self._fault = OK
        self._flaky_used: dict[str, int] = {}
        self.requests = 0
        self.by_model: dict[str, int] = {}
        self.in_flight = 0  # a live gauge: reset() leaves it alone
        self.scripted = Script()
        # The last request bodies, as received (both surfaces), for tests to read back.
        self.received: deque[bytes] = deque(maxlen=RECEIVED)
        self.set_fault(fault)

    @property
    def fault(self) -> str:
        return self._fault.spec

    def set_fault(self, spec: str) -> None:
        """Apply ``spec`` to every model whose name is not itself a spec; ``ok`` clears it."""
        parsed = parse_fault(spec)
        if parsed is None:
            raise ValueError(f"unknown fault spec {spec!r}")
        self._fault = parsed
        self._flaky_used.pop("", None)

    def reset(self) -> None:
        """Forget counters, flaky progress and scripted replies; clear the fault."""
        self._fault = OK
        self._flaky_used = {}
        self.requests = 0
        self.by_model = {}
        self.scripted.clear()
        self.received.clear()

    def script(self, replies: list[str | dict[str, str]], match: str | None = None) -> None:
        """Queue replies for the next model calls, in order (see :mod:`standby.sim.script`):
        a string is the raw text of an answer, ``{"fault": spec}`` a fault; with ``match``, only
        a request whose text contains it takes them. ValueError on a bad reply."""
        self.scripted.add([parse_reply(r, match) for r in replies])

    def stats(self) -> dict[str, Any]:
        """Requests since the last reset (in total and by model), the fault, and how many
        model requests are being handled right now (``in_flight``: a hung request counts
        until its client goes away)."""
        return {
            "requests": self.requests,
            "by_model": dict(self.by_model),
            "fault": self.fault,
            "in_flight": self.in_flight,
            "scripted": self.scripted.used,
            "script_pending": len(self.scripted.pending()),
        }

    def admit(self, model: str) -> tuple[int, Fault]:
        """Count a request for ``model`` (an empty name counts only in the total); its sequence
        number and the fault it meets."""
        self.requests += 1
        if model:
            self.by_model[model] = self.by_model.get(model, 0) + 1
        fault, key = parse_fault(model), model
        if fault is None:
            fault, key = self._fault, ""
        if fault.kind == "flaky":
            used = self._flaky_used.get(key, 0)
            if used >= fault.value:
                return self.requests, OK
            self._flaky_used[key] = used + 1
            return self.requests, _FLAKY_503
        return self.requests, fault

    def key_error(self, key: str | None) -> tuple[int, str] | None:
        """``None`` if ``key`` is accepted, else the status and message to answer with."""
        if self.api_key is None or key == self.api_key:
            return None
        if not key:
            return 401, (
                "Request is missing required authentication credential: pass an API key in "
                "the x-goog-api-key header (simulated Gemini)."
            )
        return 403, "API key not valid. Please pass a valid API key. (simulated Gemini)"


class _Handlers:
    """Request handlers of one app; ``closing`` wakes hung and sleeping handlers at shutdown."""

    def __init__(self, sim: SimGemini) -> None:
        self.sim = sim
        self.closing = asyncio.Event()

    async def on_startup(self, app: web.Application) -> None:
        self.closing = asyncio.Event()

    async def on_shutdown(self, app: web.Application) -> None:
        self.closing.set()

    async def native(self, request: web.Request) -> web.StreamResponse:
        model, sep, method = request.match_info["call"].rpartition(":")
        if sep and method in gemini_embed.METHODS:
            return await self.embed(request, model, method)
        if not sep or method not in _METHODS:
            return NATIVE.error(
                404,
                f"Method {method or request.match_info['call']!r} is not found (simulated Gemini).",
            )
        seq, fault = self.sim.admit(model)
        self.sim.in_flight += 1
        try:
            key = request.headers.get("x-goog-api-key") or request.query.get("key")
            if denied := self.sim.key_error(key):
                return NATIVE.error(*denied)
            body = await request.read()
            self.sim.received.append(body)
            try:
                req = parse_native(body)
            except BadRequest as e:
                return NATIVE.error(400, e.message)
            if refused := signature_error(model, req) or config_error(model, body):
                return NATIVE.error(400, refused)
            stream = method == "streamGenerateContent"
            extra = {"sse": stream and request.query.get("alt") == "sse"}
            fault, ans = _scripted(self.sim.scripted.take(req.context), fault, model, req)
            turn = Turn(model, seq, req, ans)
            return await self.run(request, NATIVE, fault, turn, stream, extra)
        finally:
            self.sim.in_flight -= 1

    async def embed(
        self, request: web.Request, model: str | None, method: str = ""
    ) -> web.StreamResponse:
        """Embeddings on the native surface (``model`` from the URL) or, with ``model`` None,
        the OpenAI one; faults apply as for chat, scripts do not."""
        base: Surface = NATIVE if model is not None else gemini_openai.OPENAI
        raw = await request.read()
        try:
            if model is None:
                model, answer = gemini_embed.openai(base, raw)
            else:
                answer = gemini_embed.native(base, model, method, raw)
        except BadRequest as e:
            self.sim.admit("")
            return base.error(400, e.message)
        seq, fault = self.sim.admit(model)
        self.sim.in_flight += 1
        try:
            auth = request.headers.get("Authorization", "")
            bearer = auth[7:] if auth[:7].lower() == "bearer " else None
            key = request.headers.get("x-goog-api-key") or request.query.get("key") or bearer
            if denied := self.sim.key_error(key):
                return base.error(*denied)
            return await self.run(request, answer, fault, Turn(model, seq, answer.req), False, {})
        finally:
            self.sim.in_flight -= 1

    async def openai_embed(self, request: web.Request) -> web.StreamResponse:
        return await self.embed(request, None)

    async def openai(self, request: web.Request) -> web.StreamResponse:
        surface = gemini_openai.OPENAI
        body = await request.read()
        self.sim.received.append(body)
        try:
            model, req, stream, include_usage = gemini_openai.parse(body)
        except BadRequest as e:
            self.sim.admit("")
            return surface.error(400, e.message)
        seq, fault = self.sim.admit(model)
        self.sim.in_flight += 1
        try:
            auth = request.headers.get("Authorization", "")
            bearer = auth[7:] if auth[:7].lower() == "bearer " else None
            if denied := self.sim.key_error(bearer or request.headers.get("x-goog-api-key")):
                return surface.error(*denied)
            if refused := signature_error(model, req):
                return surface.error(400, refused)
            extra = {"include_usage": include_usage, "created": int(time.time())}
            fault, ans = _scripted(self.sim.scripted.take(req.context), fault, model, req)
            return await self.run(
                request, surface, fault, Turn(model, seq, req, ans), stream, extra
            )
        finally:
            self.sim.in_flight -= 1

    async def run(
        self,
        request: web.Request,
        surface: Surface,
        fault: Fault,
        turn: Turn,
        stream: bool,
        extra: dict[str, Any],
    ) -> web.StreamResponse:
        """Apply ``fault`` and answer ``turn`` on ``surface``."""
        kind = fault.kind
        if kind == "reset":
            return _abort(request, rst=True)
        if kind == "hang":
            await self._wait_gone(request)
            return _abort(request, rst=False)
        if kind == "slow" and not await self._sleep(fault.value):
            return _abort(request, rst=False)
        if kind == "error":
            retry = fault.retry_after if fault.value == 429 else None
            msg = f"{_ERROR_MESSAGES.get(fault.value, 'Error')} (simulated fault {fault.spec})"
            return surface.error(fault.value, msg, retry)
        if kind == "cut" and not stream:
            return _abort(request, rst=False)
        outcome: Outcome = (
            kind if kind in ("safety", "blocked", "recitation", "malformed_call") else "ok"
        )
        if not stream:
            if kind == "malformed":
                return web.Response(
                    body=b"{simulated malformed body", content_type="application/json"
                )
            return web.Response(
                body=surface.body(turn, outcome),
                content_type="application/json",
            )
        frames, finishing = surface.frames(turn, outcome, extra)
        if kind == "malformed":
            frames = [surface.malformed_frame(extra)]
        limit = min(fault.value, finishing) if kind == "cut" else len(frames)
        resp = web.StreamResponse(headers=surface.stream_headers(extra))
        try:
            await resp.prepare(request)
            if kind == "idle":
                for i, frame in enumerate(frames):
                    if i and not await self._sleep(fault.value):
                        return _abort(request, rst=False, resp=resp)
                    await resp.write(frame)
            elif kind == "cut":
                if limit:
                    await resp.write(b"".join(frames[:limit]))
                return _abort(request, rst=False, resp=resp)
            else:
                # Nothing to wait for between frames: one write instead of one per frame.
                await resp.write_eof(b"".join(frames))
                return resp
            await resp.write_eof()
        except ConnectionError:
            pass  # the client went away mid-stream
        return resp

    async def _sleep(self, ms: int) -> bool:
        """Sleep ``ms``; False if the server began shutting down meanwhile."""
        try:
            await asyncio.wait_for(self.closing.wait(), ms / 1000)
        except TimeoutError:
            return True
        return False

    async def _wait_gone(self, request: web.Request) -> None:
        # aiohttp does not cancel handlers when the client disconnects: poll the transport.
        while not self.closing.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.05)

    async def set_fault(self, request: web.Request) -> web.Response:
        try:
            spec = orjson.loads(await request.read())["fault"]
            self.sim.set_fault(spec)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            return NATIVE.error(400, f'expected {{"fault": "<spec>"}} with a known spec: {e}')
        return json_response({"fault": self.sim.fault})

    async def get_fault(self, request: web.Request) -> web.Response:
        return json_response({"fault": self.sim.fault})

    async def set_script(self, request: web.Request) -> web.Response:
        try:
            data = orjson.loads(await request.read())
            replies, match = data["replies"], data.get("match")
            if not isinstance(replies, list) or not (match is None or isinstance(match, str)):
                raise TypeError("replies must be a list and match a string")
            self.sim.script(replies, match)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            return NATIVE.error(
                400, f'expected {{"replies": [text | {{"fault": spec}}, ...], "match": str}}: {e}'
            )
        return json_response({"pending": self.sim.scripted.pending()})

    async def get_script(self, request: web.Request) -> web.Response:
        return json_response({"pending": self.sim.scripted.pending()})

    async def stats(self, request: web.Request) -> web.Response:
        return json_response(self.sim.stats())

    async def reset(self, request: web.Request) -> web.Response:
        self.sim.reset()
        return json_response(self.sim.stats())

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok", "simulation": "gemini"})


_ERROR_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission.",
    404: "Requested entity was not found.",
    413: "Request payload size exceeds the limit.",
    422: "Request could not be processed.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred.",
    502: "Bad gateway.",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}


def _scripted(
    reply: Reply | None, fault: Fault, model: str, req: SimRequest
) -> tuple[Fault, Answer | None]:
    """The fault and answer a request meets once the script has had its say."""
    if reply is None:
        return fault, None
    if reply.fault is not None:
        return (_FLAKY_503 if reply.fault.kind == "flaky" else reply.fault), None
    return OK, scripted_reply(reply, model, req)


def _abort(
    request: web.Request, *, rst: bool, resp: web.StreamResponse | None = None
) -> web.StreamResponse:
    """Drop the connection without (finishing) an answer; ``rst`` sends a TCP reset."""
    transport = request.transport
    if transport is not None:
        if rst:
            sock = transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # aiohttp then fails to write this response, sees ConnectionError and stays quiet.
    return resp if resp is not None else web.Response()


def build_app(sim: SimGemini) -> web.Application:
    """The aiohttp application serving ``sim`` (native, OpenAI-compatible and control routes)."""
    h = _Handlers(sim)
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.on_startup.append(h.on_startup)
    app.on_shutdown.append(h.on_shutdown)
    app.router.add_post("/{version:v1beta|v1}/models/{call}", h.native)
    app.router.add_post("/{version:v1beta|v1}/openai/chat/completions", h.openai)
    app.router.add_post("/{version:v1beta|v1}/openai/embeddings", h.openai_embed)
    app.router.add_post("/_sim/fault", h.set_fault)
    app.router.add_get("/_sim/fault", h.get_fault)
    app.router.add_post("/_sim/script", h.set_script)
    app.router.add_get("/_sim/script", h.get_script)
    app.router.add_get("/_sim/stats", h.stats)
    app.router.add_post("/_sim/reset", h.reset)
    app.router.add_get("/healthz", h.healthz)
    return app


def serve(host: str, port: int, api_key: str | None = None) -> None:
    """Run the simulated Gemini until interrupted (uvloop when installed)."""
    loop: asyncio.AbstractEventLoop | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(
        build_app(SimGemini(api_key=api_key)),
        host=host,
        port=port,
        access_log=None,
        shutdown_timeout=1.0,
        loop=loop,
        print=lambda _: print(f"SIMULATED Gemini (not Google) on http://{host}:{port}", flush=True),
    )
