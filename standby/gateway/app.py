"""The FastAPI application: builds providers from the config, starts them, serves routes."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from standby.config import BackendConfig, LocalBackend, Settings
from standby.errors import RateLimited, StandbyError
from standby.gateway.accounting import Accounting
from standby.gateway.admin import admin_api
from standby.gateway.auth import ANONYMOUS, KeyRing, server_digests
from standby.gateway.capture import Capture
from standby.gateway.embeddings import embeddings_api
from standby.gateway.errors import error_response
from standby.gateway.failover import Failover
from standby.gateway.fetch import MediaFetcher
from standby.gateway.metrics import Metrics
from standby.gateway.metrics_page import MetricsPage
from standby.gateway.metrics_page import render as render_metrics
from standby.gateway.models import models_api
from standby.gateway.responses import RESPONSES_PATH, responses_api, responses_asgi
from standby.gateway.responses_state import ResponseKeeper
from standby.gateway.routes import CHAT_PATH, api, chat_asgi
from standby.gateway.secrets import secret_values
from standby.gateway.shared_limits import admission_for, limiter_for
from standby.gateway.worker_env import model_socket_path, run_dir
from standby.openai_models import ChatCompletionRequest
from standby.providers.base import Provider, build_provider
from standby.providers.hotswap import HotSwappable
from standby.scrub import SECRETS, register
from standby.store.card import CardError, read_card

if TYPE_CHECKING:
    from standby.gateway.promotions import ModelFollower

log = logging.getLogger("standby.gateway")


class Gateway:
    """Everything a request handler needs, built once from the settings."""

    def __init__(self, settings: Settings, providers: dict[str, Provider] | None = None):
        self.settings = settings
        # From here on, no configured secret reaches an error body, a log record or a capture.
        register(secret_values(settings))
        self.created = int(time.time())
        self.metrics = Metrics()
        gateway_keys, admin_keys = server_digests(settings.server)
        self.keys = KeyRing(gateway_keys)
        self.admin_keys = KeyRing(admin_keys, kind="admin key")
        # Under `standby serve --workers N`, rate limits and admission caps hold for the host.
        self.limiter = limiter_for(settings)
        self.config_path: Path | None = None  # `standby serve`: keys reload from this file too
        self.providers = providers or {
            name: backend_provider(name, cfg) for name, cfg in settings.backends.items()
        }
        self.failover = Failover(settings, self.providers, self.metrics.breaker_changed)
        self.accounting = Accounting(settings, self.metrics)
        self.admission = admission_for(settings, self.metrics)
        self.capture = (
            Capture(
                settings.capture,
                self.metrics,
                keep_media=settings.media.keep_in_capture,
                secrets=SECRETS.secrets,
            )
            if settings.capture.enabled
            else None
        )
        self.fetcher = MediaFetcher(settings.media)  # image URLs in requests
        self.metrics_page = MetricsPage(lambda: render_metrics(self))  # GET /metrics
        self.responses = ResponseKeeper(settings)  # stored responses (opened on first use)
        self.follower: ModelFollower | None = None  # set when registry.follow names backends

    async def start(self) -> None:
        """Start every backend; a backend that cannot start stops the gateway with its error."""
        if self.capture is not None:
            await self.capture.start()
        await asyncio.gather(*(p.start() for p in self.providers.values()))
        for name, provider in self.providers.items():
            self.metrics.backend_ready.labels(name).set(1 if provider.ready() else 0)
            served = provider.served() if isinstance(provider, HotSwappable) else None
            if served is not None:  # a local backend; an openai one only once switched
                self.metrics.fallback_model_info.labels(served.version, served.base_model).set(1)
                for criterion, score in model_scores(served.adapter).items():
                    self.metrics.fallback_model_score.labels(criterion).set(score)
        if self.settings.registry.follow:
            from standby.gateway.promotions import ModelFollower  # local backends: torch is there

            followed = {n: self.providers[n] for n in self.settings.registry.follow}
            self.follower = ModelFollower(self.settings, followed, self.metrics)
            await self.follower.start()
        if not self.keys.enabled:
            log.warning("server.api_keys is empty: the gateway accepts requests without a key")

    def authorize(self, authorization: str | None) -> str | None:
        """Check the gateway key, then its rate limit; return the key id (None: auth off)."""
        key = self.keys.check(authorization)
        if self.limiter is not None:
            try:
                self.limiter.take(key)
            except RateLimited:
                self.metrics.rate_limited.labels(key or ANONYMOUS).inc()
                raise
        return key

    async def close(self) -> None:
        """After the server stopped taking requests: flush captured answers, then backends."""
        if self.follower is not None:
            await self.follower.close()
        if self.capture is not None:
            await self.capture.close()
        await self.responses.close()
        await asyncio.gather(*(p.close() for p in self.providers.values()))


def backend_provider(name: str, config: BackendConfig) -> Provider:
    """The provider of one backend; in a worker of several (``standby serve --workers N``), a
    ``local`` backend's is the one that forwards to the host's model process."""
    run = run_dir()
    if run is not None and isinstance(config, LocalBackend):
        from standby.providers.local_remote import HostedLocalProvider

        return HostedLocalProvider(name, config, model_socket_path(run, name))
    return build_provider(name, config)


class GatewayApp:
    """The ASGI entry point: chat completions and Responses requests (``POST``) go straight to
    their handlers, everything else (models, health, metrics, OpenAPI, stored responses, 404s)
    through FastAPI."""

    def __init__(self, api: FastAPI) -> None:
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            direct = _DIRECT.get(scope["path"])
            if direct is not None:
                scope["app"] = self.api  # handlers find the gateway on app.state
                await direct(scope, receive, send)
                return
        await self.api(scope, receive, send)


# The hot paths, served without FastAPI (each with its own error boundary).
_DIRECT = {CHAT_PATH: chat_asgi, RESPONSES_PATH: responses_asgi}


def model_scores(adapter: str | None) -> dict[str, float]:
    """The judge scores on a local adapter's model card (written when a model passes the
    evaluation gate), by criterion. Empty for a base model, a Hub id, or an adapter without a
    card or scores; a card that cannot be read is a warning."""
    if adapter is None:
        return {}
    try:
        card = read_card(Path(adapter))
    except CardError as e:
        log.warning("unreadable model card: %s", e)
        return {}
    return card.scores.criteria() if card is not None and card.scores is not None else {}


def create_app(gw: Gateway) -> GatewayApp:
    """The ASGI app over a gateway. Starting and closing the gateway is ``server.py``'s job,
    outside uvicorn's lifespan, so a backend that cannot start fails with one clear line."""
    return GatewayApp(create_api(gw))


def create_api(gw: Gateway) -> FastAPI:
    app = FastAPI(title="standby", summary="OpenAI-compatible failover gateway", version="0.1.0")
    app.state.gateway = gw
    app.include_router(api)
    app.include_router(embeddings_api)
    app.include_router(responses_api)
    app.include_router(models_api)
    app.include_router(admin_api)

    async def handle(request: Request, exc: Exception) -> Response:
        # Every endpoint but chat (which has its own boundary, routes.serve_chat).
        if isinstance(exc, HTTPException) and exc.status_code in _NO_ROUTE:
            exc = _no_route(request, exc)
        return error_response(exc)

    app.add_exception_handler(StandbyError, handle)
    app.add_exception_handler(HTTPException, handle)
    app.add_exception_handler(Exception, handle)
    _add_request_schema(app)
    return app


_NO_ROUTE = {404: "Invalid URL", 405: "Invalid method for URL"}


def _no_route(request: Request, exc: HTTPException) -> HTTPException:
    """An unknown path (404) or method (405, its Allow header kept) said as OpenAI says it."""
    what = f"{request.method} {request.url.path}"[:200]
    detail = f"{_NO_ROUTE[exc.status_code]} ({what})"
    return HTTPException(exc.status_code, detail, headers=exc.headers)


def _add_request_schema(app: FastAPI) -> None:
    """Publish the chat request model in the OpenAPI document (the handler parses the raw body
    itself, to enforce the size limit and answer in OpenAI's error shape)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            defs = ChatCompletionRequest.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(defs.pop("$defs", {}))
            components["ChatCompletionRequest"] = defs
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
