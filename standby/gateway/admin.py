"""``/admin/...``: operator endpoints, off unless ``server.admin_keys`` is set (every /admin path
is then a 404, as if it did not exist). They take an admin key, never a gateway key.

    POST /admin/breakers/{backend}/open|close|reset   drills: hold a breaker open or closed
    POST /admin/keys/reload                           re-read the key file (and the config)
    POST /admin/models/promote   {"version": "..."}   the registry beside the bus
    POST /admin/models/rollback  {"backend": "gemma", "reason": "..."}

Each call is one log line and a ``standby_admin_actions_total{action,outcome}`` increment, with
the admin key's id (a digest prefix), never the key.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response

from standby.config import load_settings
from standby.errors import ConfigError, RequestError, StandbyError, parse_json
from standby.gateway.auth import server_digests
from standby.gateway.breaker import State
from standby.gateway.errors import JSON
from standby.gateway.secrets import secret_values
from standby.gateway.worker_env import reload_every_worker
from standby.scrub import SECRETS, register

if TYPE_CHECKING:
    from standby.gateway.app import Gateway
    from standby.store.registry import Registry

log = logging.getLogger("standby.admin")
admin_api = APIRouter(prefix="/admin", include_in_schema=False)
T = TypeVar("T")


class NotFound(RequestError):
    status = 404


def reload_keys(gw: Gateway) -> dict[str, int]:
    """Re-read the gateway and admin keys: the config file ``standby serve`` was started with
    (its ``server`` section), else the key file only. On any problem the old keys stay and
    ConfigError says why; turning gateway auth off takes a restart."""
    server = gw.settings.server
    try:
        if gw.config_path is not None:
            server = load_settings(gw.config_path).server
        keys, admin = server_digests(server)
        if gw.keys.enabled and not keys:
            raise ConfigError("the reloaded config has no gateway key; restart to turn auth off")
    except ConfigError as e:
        gw.metrics.key_reloads.labels("error").inc()
        log.error("key reload failed, the old keys stay: %s", e)
        raise
    register(secret_values(gw.settings.model_copy(update={"server": server})))
    if gw.capture is not None:
        gw.capture.add_secrets(SECRETS.secrets)
    gw.keys.replace(keys)
    gw.admin_keys.replace(admin)
    gw.metrics.key_reloads.labels("ok").inc()
    log.warning("keys reloaded: %d gateway keys, %d admin keys", len(gw.keys), len(gw.admin_keys))
    return {"api_keys": len(gw.keys), "admin_keys": len(gw.admin_keys)}


async def _admin(
    request: Request, action: str, target: list[str], work: Callable[[Gateway], Awaitable[T]]
) -> T:
    """404 while admin is off; else check the admin key, run ``work`` (which may name its
    target in ``target``), record the action."""
    gw: Gateway = request.app.state.gateway
    if not gw.admin_keys.enabled:
        raise HTTPException(404, "Not Found")
    admin_id = gw.admin_keys.check(request.headers.get("authorization"))
    try:
        done = await work(gw)
    except Exception as e:
        gw.metrics.admin_actions.labels(action, "error").inc()
        log.warning(
            "admin %s %s by key %s failed: %s", action, target[0], admin_id, type(e).__name__
        )
        raise
    gw.metrics.admin_actions.labels(action, "ok").inc()
    log.warning("admin %s %s by key %s", action, target[0], admin_id)
    return done


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type=JSON)


_FORCE: dict[str, State | None] = {"open": State.OPEN, "close": State.CLOSED, "reset": None}


@admin_api.post("/breakers/{backend}/{action}")
async def force_breaker(request: Request, backend: str, action: str) -> Response:
    async def work(gw: Gateway) -> Response:
        if action not in _FORCE:
            raise NotFound(f"No breaker action {action!r} (open, close, reset).", code="not_found")
        breaker = gw.failover.breakers.get(backend)
        if breaker is None:
            raise NotFound(f"No backend {backend!r}.", param="backend", code="backend_not_found")
        breaker.force(_FORCE[action])
        state = breaker.current_state().name.lower().replace("_", "-")
        return _json({"backend": backend, "breaker": state, "held": action != "reset"})

    name = f"breaker_{action}" if action in _FORCE else "breaker_unknown"
    return await _admin(request, name, [backend], work)


@admin_api.post("/keys/reload")
async def keys_reload(request: Request) -> Response:
    async def work(gw: Gateway) -> Response:
        try:
            counts: dict[str, Any] = dict(reload_keys(gw))
        except ConfigError as e:
            raise RequestError(
                f"Keys not reloaded, the old keys stay: {e}", code="reload_failed"
            ) from None
        # Under --workers N this worker has checked and loaded the keys; the supervisor's
        # SIGHUP brings every worker (this one again) to them.
        counts["every_worker"] = reload_every_worker()
        return _json(counts)

    return await _admin(request, "keys_reload", ["-"], work)


class _Promote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=128)


class _Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="rolled back by an admin", max_length=500)


def _parse(model: type[BaseModel], body: bytes) -> Any:
    return parse_json(model, body or b"{}")


async def _registry(gw: Gateway, work: Callable[[Registry, Any], Awaitable[Any]]) -> dict[str, Any]:
    from standby.store import open_bus, open_state
    from standby.store.registry import Registry, RegistryError

    url = gw.settings.registry_url
    try:
        async with open_state(url) as state, open_bus(url) as bus:
            done = await work(Registry(state), bus)
    except RegistryError as e:
        raise RequestError(str(e), code="registry_rejected") from None
    except StandbyError as e:  # the registry's store is unreachable
        raise RequestError(f"registry unavailable: {e}", code="registry_unavailable") from None
    return {
        "backend": done.serving.backend,
        "serving": done.serving.version,
        "previous": done.previous.version if done.previous else None,
    }


@admin_api.post("/models/promote")
async def models_promote(request: Request) -> Response:
    from standby.store.promotion import promote

    target = ["-"]

    async def work(gw: Gateway) -> Response:
        body = _parse(_Promote, await request.body())
        target[0] = body.version
        return _json(await _registry(gw, lambda reg, bus: promote(reg, bus, body.version)))

    return await _admin(request, "model_promote", target, work)


@admin_api.post("/models/rollback")
async def models_rollback(request: Request) -> Response:
    from standby.store.promotion import rollback

    target = ["-"]

    async def work(gw: Gateway) -> Response:
        body = _parse(_Rollback, await request.body())
        target[0] = body.backend
        done = await _registry(gw, lambda reg, bus: rollback(reg, bus, body.backend, body.reason))
        return _json(done)

    return await _admin(request, "model_rollback", target, work)
