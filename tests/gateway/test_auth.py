"""Gateway keys: inline, as digests, from a key file; reload without restart; rate limit per key.
Real gateways on 127.0.0.1, the official openai SDK as client."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx
import openai
import pytest

from standby.config import parse_settings
from standby.errors import ConfigError
from standby.gateway.admin import reload_keys
from standby.gateway.app import Gateway
from standby.gateway.auth import key_id
from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

HELLO = [{"role": "user", "content": "hello"}]


def _sha(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _ok(gateway: GatewayServer, key: str) -> bool:
    try:
        gateway.client(api_key=key).chat.completions.create(model=ROUTE, messages=HELLO)
    except openai.AuthenticationError:
        return False
    return True


def test_inline_key_digest_and_key_file(
    sim: RunningSim, start_gateway: StartGateway, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# team A\nfile-key-1\n\n  {_sha('file-key-2')}  \n# end\n")
    server = {"api_keys": ["inline-key", _sha("inline-digest")], "api_keys_file": str(keys)}
    gateway = start_gateway(base_config(sim.url, None), server=server)
    for key in ("inline-key", "inline-digest", "file-key-1", "file-key-2"):
        assert _ok(gateway, key), key
    for key in ("wrong", _sha("file-key-2"), "# team A", "sha256:"):
        assert not _ok(gateway, key), key


def test_key_file_reload_swaps_keys_and_a_bad_file_keeps_the_old(
    sim: RunningSim, start_gateway: StartGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("old-key\n")
    gateway = start_gateway(base_config(sim.url, None), server={"api_keys_file": str(keys)})
    assert gateway.gateway is not None
    assert _ok(gateway, "old-key") and not _ok(gateway, "new-key")

    keys.write_text("new-key\n")
    assert reload_keys(gateway.gateway) == {"api_keys": 1, "admin_keys": 0}
    assert _ok(gateway, "new-key") and not _ok(gateway, "old-key")

    for bad, why in (("sha256:abc\n", "64 hex digits"), ("# nothing\n", "holds no key")):
        keys.write_text(bad)
        with pytest.raises(ConfigError, match=why):
            reload_keys(gateway.gateway)
        assert _ok(gateway, "new-key")
    keys.unlink()
    with caplog.at_level("ERROR", "standby.admin"), pytest.raises(ConfigError, match="not found"):
        reload_keys(gateway.gateway)
    assert _ok(gateway, "new-key")
    failures = [r.getMessage() for r in caplog.records if "key reload failed" in r.getMessage()]
    assert len(failures) == 3 and not any("\n" in f for f in failures)  # one line per failure
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'standby_key_reloads_total{outcome="ok"} 1.0' in metrics
    assert 'standby_key_reloads_total{outcome="error"} 3.0' in metrics


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"api_keys": ["sha256:12"]}, "server.api_keys[0]: a sha256: digest must be 64 hex"),
        ({"api_keys_file": "/nonexistent/keys"}, "/nonexistent/keys: key file not found"),
        ({"api_keys": ["k"], "admin_keys": ["k"]}, "an admin key is also a gateway key"),
        ({"admin_keys": [""]}, "server.admin_keys: an API key is empty"),
        ({"rate_limit_per_key": {"requests_per_s": 0}}, "requests_per_s: Input should be"),
    ],
)
def test_key_config_problems_are_one_line(
    sim: RunningSim, server: dict[str, object], message: str
) -> None:
    data = base_config(sim.url, None)
    data["server"].update(server)
    with pytest.raises(ConfigError) as err:
        Gateway(parse_settings(data, "standby.yaml"))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_rate_limit_per_key_answers_429_with_retry_after(
    sim: RunningSim, start_gateway: StartGateway
) -> None:
    server = {
        "api_keys": ["key-a", "key-b"],
        "rate_limit_per_key": {"requests_per_s": 0.5, "burst": 2},
    }
    gateway = start_gateway(base_config(sim.url, None), server=server)
    a = gateway.client(api_key="key-a")
    for _ in range(2):
        a.chat.completions.create(model=ROUTE, messages=HELLO)
    with pytest.raises(openai.RateLimitError) as err:
        a.chat.completions.create(model=ROUTE, messages=HELLO)
    assert err.value.status_code == 429
    assert err.value.response.headers["retry-after"] in ("1", "2")  # 1 token at 0.5/s, less refill
    body = err.value.response.json()
    assert body["error"]["type"] == "rate_limit_error"
    assert body["error"]["code"] == "rate_limit_exceeded"
    # Another key has its own bucket.
    gateway.client(api_key="key-b").chat.completions.create(model=ROUTE, messages=HELLO)
    metrics = httpx.get(f"{gateway.url}/metrics").text
    ida = key_id(hashlib.sha256(b"key-a").digest())
    assert f'standby_rate_limited_total{{key_id="{ida}"}} 1.0' in metrics
    assert "key-a" not in metrics
    assert sim.sim.requests == 3


def test_rate_limit_refills(sim: RunningSim, start_gateway: StartGateway) -> None:
    server = {"rate_limit_per_key": {"requests_per_s": 1, "burst": 1}}
    gateway = start_gateway(base_config(sim.url, None), server=server)
    url = f"{gateway.url}/v1/chat/completions"
    body = {"model": ROUTE, "messages": HELLO}
    with httpx.Client() as client:
        statuses = [client.post(url, json=body).status_code for _ in range(3)]
        assert statuses[0] == 200 and 429 in statuses  # no auth: one shared bucket, burst 1
        time.sleep(1.1)
        assert client.post(url, json=body).status_code == 200
