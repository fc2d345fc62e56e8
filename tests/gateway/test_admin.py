"""/admin endpoints: off by default, a separate admin key, breaker drills, key reload, promote and
rollback through the registry beside the bus. Real gateways, real SQLite registry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from standby.store import open_state
from standby.store.registry import ModelVersion, Registry
from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

HELLO = [{"role": "user", "content": "hello"}]
ADMIN = {"authorization": "Bearer admin-key"}


def _post(gateway: GatewayServer, path: str, key: str | None = "admin-key", **kw: Any) -> Any:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{gateway.url}{path}", headers=headers, timeout=10, **kw)


@pytest.fixture
def admin_gateway(sim: RunningSim, start_gateway: StartGateway, tmp_path: Path) -> GatewayServer:
    keys = tmp_path / "keys.txt"
    keys.write_text("client-key\n")
    data = base_config(sim.url, None)
    data["registry"] = {"url": f"sqlite:///{tmp_path / 'bus.db'}"}
    server = {"api_keys_file": str(keys), "admin_keys": ["admin-key"]}
    return start_gateway(data, server=server)


def test_admin_is_off_by_default(sim: RunningSim, start_gateway: StartGateway) -> None:
    gateway = start_gateway(base_config(sim.url, None), server={"api_keys": ["client-key"]})
    for path in ("/admin/keys/reload", "/admin/breakers/gemini/open", "/admin/models/promote"):
        for key in (None, "client-key", "anything"):
            r = _post(gateway, path, key)
            assert r.status_code == 404, (path, key)
            # Word for word what a path that does not exist gets.
            assert r.json()["error"]["message"] == f"Invalid URL (POST {path})"
    assert gateway.breaker("gemini") == "CLOSED"
    schema = httpx.get(f"{gateway.url}/openapi.json").json()
    assert not [p for p in schema["paths"] if p.startswith("/admin")]


def test_admin_and_gateway_keys_do_not_cross(admin_gateway: GatewayServer) -> None:
    for key in (None, "client-key", "wrong"):
        r = _post(admin_gateway, "/admin/keys/reload", key)
        assert r.status_code == 401, key
        assert r.json()["error"]["type"] == "authentication_error"
        assert "admin key" in r.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        admin_gateway.client(api_key="admin-key").chat.completions.create(
            model=ROUTE, messages=HELLO
        )
    assert _post(admin_gateway, "/admin/keys/reload").json() == {
        "api_keys": 1,
        "admin_keys": 1,
        "every_worker": False,
    }


def test_breaker_drill_force_open_close_reset(
    admin_gateway: GatewayServer, sim: RunningSim, caplog: pytest.LogCaptureFixture
) -> None:
    client = admin_gateway.client(api_key="client-key")
    with caplog.at_level("WARNING", "standby.admin"):
        r = _post(admin_gateway, "/admin/breakers/gemini/open")
    assert r.status_code == 200
    assert r.json() == {"backend": "gemini", "breaker": "open", "held": True}
    with pytest.raises(openai.APIStatusError) as err:  # the only backend is held open
        client.chat.completions.create(model=ROUTE, messages=HELLO)
    assert err.value.status_code == 503
    assert sim.sim.requests == 0
    ready = httpx.get(f"{admin_gateway.url}/readyz")
    assert ready.status_code == 503 and ready.json()["backends"]["gemini"]["breaker"] == "open"

    assert _post(admin_gateway, "/admin/breakers/gemini/close").json()["breaker"] == "closed"
    sim.sim.set_fault("error-500")
    for _ in range(5):  # more than breaker.failures: held closed, it does not trip
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model=ROUTE, messages=HELLO)
    assert admin_gateway.breaker("gemini") == "CLOSED"

    assert _post(admin_gateway, "/admin/breakers/gemini/reset").json()["held"] is False
    for _ in range(3):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model=ROUTE, messages=HELLO)
    assert admin_gateway.breaker("gemini") == "OPEN"  # tripping again after the reset

    r = _post(admin_gateway, "/admin/breakers/nope/open")
    assert r.status_code == 404 and r.json()["error"]["code"] == "backend_not_found"
    r = _post(admin_gateway, "/admin/breakers/gemini/explode")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    metrics = httpx.get(f"{admin_gateway.url}/metrics").text
    assert 'standby_admin_actions_total{action="breaker_open",outcome="ok"} 1.0' in metrics
    assert 'standby_admin_actions_total{action="breaker_open",outcome="error"} 1.0' in metrics
    lines = [r.getMessage() for r in caplog.records if r.name == "standby.admin"]
    assert any(line.startswith("admin breaker_open gemini by key ") for line in lines)
    assert not any("admin-key" in line for line in lines)


def test_promote_and_rollback_through_the_registry(
    admin_gateway: GatewayServer, tmp_path: Path
) -> None:
    async def register() -> None:
        async with open_state(f"sqlite:///{tmp_path / 'bus.db'}") as state:
            registry = Registry(state)
            for v in ("v1", "v2"):
                await registry.register(ModelVersion(version=v, backend="gemma", adapter=f"/a/{v}"))

    asyncio.run(register())
    r = _post(admin_gateway, "/admin/models/promote", json={"version": "v1"})
    assert r.status_code == 200, r.text
    assert r.json() == {"backend": "gemma", "serving": "v1", "previous": None}
    r = _post(admin_gateway, "/admin/models/promote", json={"version": "v2"})
    assert r.json() == {"backend": "gemma", "serving": "v2", "previous": "v1"}
    r = _post(admin_gateway, "/admin/models/rollback", json={"backend": "gemma"})
    assert r.json()["serving"] == "v1"

    r = _post(admin_gateway, "/admin/models/promote", json={"version": "v9"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "registry_rejected"
    r = _post(admin_gateway, "/admin/models/promote", json={"versoin": "v1"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = _post(admin_gateway, "/admin/models/promote", key=None, json={"version": "v1"})
    assert r.status_code == 401


def test_admin_and_reload_series_exist_at_zero(admin_gateway: GatewayServer) -> None:
    metrics = httpx.get(f"{admin_gateway.url}/metrics").text
    assert 'standby_key_reloads_total{outcome="error"} 0.0' in metrics
    assert 'standby_admin_actions_total{action="model_promote",outcome="ok"} 0.0' in metrics
