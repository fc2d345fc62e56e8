"""No secret in any output: gateway keys, the admin key, upstream Gemini keys (from ``${VAR}``)
and an HF_TOKEN in the environment, through normal traffic, streams, failover, all backends
failing, bad auth, admin calls, key rotation, capture to SQLite and materialized pairs. Every
output is collected and searched (with the encodings of tests/fixtures/secrets.py): response
bodies and headers, exception messages, log records at DEBUG, /metrics and the other GET
endpoints, the bus and pair-store files, and for ``standby serve`` its stdout and stderr.
The session-wide scan of tests/fixtures/secrets.py covers the captured output on top."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from standby.sim.background import AiohttpServer, free_port
from standby.sim.gemini import SimGemini, build_app
from standby.store import open_state
from standby.store.registry import ModelVersion, Registry
from tests.fixtures.gateway import FAST, ROUTE, StartGateway
from tests.fixtures.secrets import KnownSecret, find_secrets, leaks
from tests.fixtures.serve_process import wait_healthy

HELLO = [{"role": "user", "content": "Say hello."}]


class Outputs:
    """Everything the run produced, by where it came from."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("latin-1")  # byte for byte: a secret stored in a blob shows
        self.items.append((where, text))

    def response(self, where: str, r: httpx.Response) -> None:
        self.add(f"{where}: headers", "\n".join(f"{k}: {v}" for k, v in r.headers.items()))
        self.add(f"{where}: body", r.content)

    def files(self, folder: Path) -> None:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.add(f"file {path.name}", path.read_bytes())

    def assert_clean(self) -> None:
        assert len(self.items) > 20, "the test must look at what the run produced"
        hits = [f"{what} in {where}" for where, text in self.items for what in find_secrets(text)]
        assert not hits, "secrets leaked:\n" + "\n".join(hits)


@pytest.fixture
def secrets(known_secret: KnownSecret, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    made = {
        "gateway": known_secret("gateway key", "sk-gw-"),
        "rotated": known_secret("rotated gateway key", "sk-gw-"),
        "admin": known_secret("admin key", "adm-"),
        "new admin": known_secret("new admin key", "adm-"),
        "gemini": known_secret("upstream Gemini key", "AIza"),
        "stale": known_secret("stale upstream key", "AIza"),
        "hf": known_secret("HF token", "hf_"),
    }
    monkeypatch.setenv("STANDBY_TEST_GEMINI_KEY", made["gemini"])
    monkeypatch.setenv("STANDBY_TEST_STALE_KEY", made["stale"])
    monkeypatch.setenv("STANDBY_TEST_ADMIN_KEY", made["admin"])
    monkeypatch.setenv("HF_TOKEN", made["hf"])
    return made


@pytest.fixture
def keyed_sim(secrets: dict[str, str]) -> Iterator[tuple[str, SimGemini]]:
    """A simulated Gemini that accepts only the upstream key of this test."""
    sim = SimGemini(api_key=secrets["gemini"])
    server = AiohttpServer(build_app(sim))
    server.start()
    try:
        yield server.url, sim
    finally:
        server.stop()


def _config(sim_url: str, tmp_path: Path, keys_file: Path) -> dict[str, Any]:
    bus = f"sqlite:///{tmp_path / 'data' / 'events.db'}"
    gemini = {"type": "gemini", "model": ROUTE, "base_url": sim_url, "timeouts": dict(FAST)}
    return {
        "server": {
            "host": "127.0.0.1",
            "port": 0,
            "api_keys_file": str(keys_file),
            "admin_keys": ["${STANDBY_TEST_ADMIN_KEY}"],
        },
        "backends": {  # the primary has a stale key: 403 upstream, failover to the good one
            "gemini_stale": {**gemini, "api_key": "${STANDBY_TEST_STALE_KEY}"},
            "gemini": {**gemini, "api_key": "${STANDBY_TEST_GEMINI_KEY}"},
        },
        "routes": {ROUTE: ["gemini_stale", "gemini"], "direct": ["gemini"]},
        "breaker": {"failures": 100, "cooldown_s": 1},
        "capture": {"enabled": True, "bus": bus, "flush_interval_s": 0.05},
        "registry": {"url": bus},
    }


def _traffic(url: str, secrets: dict[str, str], out: Outputs, sim: SimGemini) -> None:
    """The same requests against an in-process gateway and ``standby serve``."""
    gw, admin = secrets["gateway"], secrets["admin"]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=gw, max_retries=0, timeout=30)
    with client, httpx.Client(base_url=url, timeout=30) as http:
        raw = client.chat.completions.with_raw_response.create(model=ROUTE, messages=HELLO)
        out.add("completion headers", str(dict(raw.headers)))
        out.add("completion", raw.text)
        assert raw.headers["x-standby-fallback-reason"] == "auth"  # the stale key failed over
        chunks = client.chat.completions.create(model=ROUTE, messages=HELLO, stream=True)
        out.add("stream", "".join(c.model_dump_json() for c in chunks))
        # A client pasting a key into its prompt: capture redacts it (the echoed answer to the
        # client is the client's own text, so it is not collected). The primary answers on
        # this route, so the answer becomes a training pair.
        pasted = [{"role": "user", "content": f"my key is {secrets['rotated']} ok"}]
        client.chat.completions.create(model="direct", messages=pasted)

        bad_auth = {
            "wrong key": {"authorization": "Bearer sk-not-a-key-at-all-0000"},
            "admin key on /v1": {"authorization": f"Bearer {admin}"},
            "basic auth": {"authorization": "Basic " + b64encode(f"me:{gw}".encode()).decode()},
            "no bearer": {"authorization": gw},
        }
        body = {"model": ROUTE, "messages": HELLO}
        for name, headers in bad_auth.items():
            r = http.post("/v1/chat/completions", json=body, headers=headers)
            assert r.status_code == 401, name
            out.response(f"bad auth {name}", r)
        for name, headers in {"gateway key": {"authorization": f"Bearer {gw}"}}.items():
            r = http.post("/admin/keys/reload", headers=headers)
            assert r.status_code == 401
            out.response(f"admin with {name}", r)
        try:
            client.chat.completions.create(model="no-such-model", messages=HELLO)
        except openai.APIStatusError as e:
            out.add("unknown model exception", f"{e!s} {e!r} {e.body!r}")

        a = {"authorization": f"Bearer {admin}"}
        for path in ("/admin/breakers/gemini/open", "/admin/breakers/gemini_stale/close"):
            out.response(path, http.post(path, headers=a))
        try:  # both backends fail: the 503 body lists each backend's error
            client.chat.completions.create(model=ROUTE, messages=HELLO)
        except openai.APIStatusError as e:
            assert e.status_code == 503
            out.add("all failed exception", f"{e!s} {e!r} {e.body!r}")
        out.response("readyz while open", http.get("/readyz"))
        out.response("reset", http.post("/admin/breakers/gemini/reset", headers=a))
        out.response("reset stale", http.post("/admin/breakers/gemini_stale/reset", headers=a))
        sim.set_fault("error-500")
        try:
            client.chat.completions.create(model=ROUTE, messages=HELLO)
        except openai.APIStatusError as e:
            out.add("upstream 500 exception", f"{e!s} {e!r} {e.body!r}")
        sim.set_fault("ok")
        r = http.post("/admin/models/promote", headers=a, json={"version": "v1"})
        assert r.status_code == 200, r.text
        out.response("promote", r)
        for path in ("/metrics", "/readyz", "/healthz", "/openapi.json"):
            out.response(path, http.get(path))
        out.response(
            "/v1/models", http.get("/v1/models", headers={"authorization": f"Bearer {gw}"})
        )


def _register_version(bus: str) -> None:
    async def register() -> None:
        async with open_state(bus) as state:
            await Registry(state).register(
                ModelVersion(version="v1", backend="gemma", adapter="/a")
            )

    asyncio.run(register())


def _materialize(tmp_path: Path, out: Outputs) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "standby.cli",
            "data",
            "materialize",
            "--once",
            "--bus",
            f"sqlite:///{tmp_path / 'data' / 'events.db'}",
            "--store",
            f"sqlite:///{tmp_path / 'data' / 'pairs.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("materialized"), run.stdout
    out.add("materialize stdout", run.stdout)
    out.add("materialize stderr", run.stderr)
    out.files(tmp_path / "data")
    assert b"my key is [API_KEY] ok" in (tmp_path / "data" / "pairs.db").read_bytes()


def test_no_secret_leaks_in_process(
    secrets: dict[str, str],
    keyed_sim: tuple[str, SimGemini],
    start_gateway: StartGateway,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"# clients\n{secrets['gateway']}\n")
    config = _config(keyed_sim[0], tmp_path, keys_file)
    out = Outputs()
    caplog.set_level("DEBUG")
    gateway = start_gateway(config)
    _register_version(config["capture"]["bus"])
    _traffic(gateway.url, secrets, out, keyed_sim[1])
    gateway.stop()  # drains capture
    out.add("log records", caplog.text)
    out.add("log messages", "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records))
    _materialize(tmp_path, out)
    out.assert_clean()


def test_no_secret_leaks_from_standby_serve(
    secrets: dict[str, str], keyed_sim: tuple[str, SimGemini], tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"{secrets['gateway']}\n")
    config = _config(keyed_sim[0], tmp_path, keys_file)
    port = free_port()
    config["server"]["port"] = port
    (tmp_path / "standby.yaml").write_text(yaml.safe_dump(config))
    _register_version(config["capture"]["bus"])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "standby.cli",
            "--log-level",
            "debug",
            "serve",
            "--config",
            str(tmp_path / "standby.yaml"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    out = Outputs()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        _traffic(url, secrets, out, keyed_sim[1])
        # Rotation without restart: a new key file, SIGHUP; the old key stops working.
        keys_file.write_text(f"{secrets['rotated']}\n")
        proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: _status(url, secrets["rotated"]) == 200)
        assert _status(url, secrets["gateway"]) == 401
        keys_file.write_text("sha256:not-hex\n")  # a bad file on reload: the old keys stay
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert _status(url, secrets["rotated"]) == 200
        # The config file is re-read too: a new admin key there replaces the old one.
        keys_file.write_text(f"{secrets['rotated']}\n")
        config["server"]["admin_keys"] = [secrets["new admin"]]
        (tmp_path / "standby.yaml").write_text(yaml.safe_dump(config))
        proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: _admin_status(url, secrets["new admin"]) == 200)
        assert _admin_status(url, secrets["admin"]) == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    assert stderr.count("keys reloaded: 1 gateway keys, 1 admin keys") >= 3
    assert stderr.count("key reload failed, the old keys stay") == 1
    assert '"outcome":"client_error"' in stderr  # the access log was on
    out.add("serve stdout", stdout)
    out.add("serve stderr", stderr)
    _materialize(tmp_path, out)
    out.assert_clean()


def _status(url: str, key: str) -> int:
    body = {"model": ROUTE, "messages": HELLO}
    r = httpx.post(
        f"{url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    return r.status_code


def _admin_status(url: str, key: str) -> int:
    r = httpx.post(f"{url}/admin/keys/reload", headers={"authorization": f"Bearer {key}"})
    return r.status_code


def _wait_for(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_the_scan_finds_a_secret_in_any_encoding(known_secret: KnownSecret) -> None:
    secret = known_secret("scan self-test", "sk-")
    basic = "Authorization: Basic " + b64encode(f"user:{secret}".encode()).decode()
    for text in (f"x{secret}y", basic, secret.encode().hex(), b64encode(secret.encode()).decode()):
        assert find_secrets(text), text
    assert not find_secrets(secret[:-1])
    masked = leaks([("stderr", f"key={secret}\n")])
    assert masked == ["scan self-test (raw) found in stderr: ...key=<SECRET>\\n..."]
