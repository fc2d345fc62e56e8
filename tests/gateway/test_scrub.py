"""#19 item 4, each attack reproduced: an upstream that echoes the key it was sent (in a 400,
in a 500, in the middle of a stream's failover), and config lines that hold a secret. The
client's error bodies, the stream's error event, the log records and the capture database
never hold the key, raw or encoded; the upstream's message is otherwise kept."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from aiohttp import web

from standby.scrub import Scrubber, encodings
from standby.sim.background import AiohttpServer
from standby.sim.gemini import SimGemini, build_app
from tests.fixtures.gateway import ROUTE, StartGateway
from tests.fixtures.secrets import KnownSecret, find_secrets

HELLO = [{"role": "user", "content": "Say hello."}]
SLOW_OK = {"connect_s": 2, "first_token_s": 15, "idle_s": 15, "total_s": 30}  # a loaded machine


class Echo:
    """A Gemini-shaped upstream that answers every call with ``status`` and an error message
    quoting the key it was sent (as Gemini's "API key not valid" may), raw, in base64 and cut
    short after ``cut`` characters of it."""

    def __init__(self) -> None:
        self.status = 400
        self.calls = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.answer)
        return app

    async def answer(self, request: web.Request) -> web.Response:
        self.calls += 1
        key = request.headers.get("x-goog-api-key", "")
        coded = base64.b64encode(f"me:{key}".encode()).decode()
        message = f"API key not valid: {key} (basic {coded}). Please pass a valid API key. "
        message += f"It began {key[:-6]}"  # an upstream's own cut: the key's first characters
        body = {"error": {"code": self.status, "message": message, "status": "INVALID_ARGUMENT"}}
        return web.json_response(body, status=self.status)


@pytest.fixture
def echo() -> Iterator[tuple[str, Echo]]:
    upstream = Echo()
    server = AiohttpServer(upstream.app())
    server.start()
    try:
        yield server.url, upstream
    finally:
        server.stop()


@pytest.fixture
def cutting_sim() -> Iterator[str]:
    """A simulated Gemini whose streams are cut after 3 chunks (a mid-stream failure)."""
    sim = SimGemini()
    sim.set_fault("cut-3")
    server = AiohttpServer(build_app(sim))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _config(echo_url: str, sim_url: str, key: str, bus: Path) -> dict[str, Any]:
    def gemini(url: str) -> dict[str, Any]:
        return {
            "type": "gemini",
            "model": ROUTE,
            "api_key": key,
            "base_url": url,
            "timeouts": SLOW_OK,
        }

    return {
        "server": {"host": "127.0.0.1", "port": 0, "api_keys": []},
        "backends": {"echo": gemini(echo_url), "echo2": gemini(echo_url), "cut": gemini(sim_url)},
        "routes": {ROUTE: ["echo"], "both": ["echo", "echo2"], "stream": ["cut", "echo"]},
        "breaker": {"failures": 100},
        "capture": {"enabled": True, "bus": f"sqlite:///{bus}", "flush_interval_s": 0.05},
    }


def test_an_upstream_that_echoes_our_key_never_hands_it_to_anyone(
    known_secret: KnownSecret,
    echo: tuple[str, Echo],
    cutting_sim: str,
    start_gateway: StartGateway,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = known_secret("upstream key echoed back", "AIza")
    echo_url, upstream = echo
    caplog.set_level("DEBUG")
    gw = start_gateway(_config(echo_url, cutting_sim, key, tmp_path / "events.db"))
    client = gw.client()
    seen: list[str] = []

    # A 400: returned to the client as upstream_rejected, the upstream's words kept.
    with pytest.raises(openai.BadRequestError) as rejected:
        client.chat.completions.create(model=ROUTE, messages=HELLO)
    body = json.dumps(rejected.value.body)
    assert rejected.value.code == "upstream_rejected"
    assert "API key not valid: [SECRET]" in body and "Please pass a valid API key" in body
    assert "It began [SECRET]" in body  # the key's start, cut short, went too
    seen += [body, str(rejected.value)]

    # A 500 from both backends: the 503 lists each backend's error.
    upstream.status = 500
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="both", messages=HELLO)
    assert failed.value.status_code == 503
    errors = failed.value.response.json()["standby"]["errors"]
    assert [e["backend"] for e in errors] == ["echo", "echo2"]
    assert all("API key not valid: [SECRET]" in e["message"] for e in errors)
    seen += [failed.value.response.text, str(failed.value)]

    # A stream cut after content, continued on the echoing backend, which fails: the stream
    # ends with an error event that names the backend's error.
    text = ""
    with pytest.raises(openai.APIError) as interrupted:
        for chunk in client.chat.completions.create(model="stream", messages=HELLO, stream=True):
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert text  # content had been sent before the failure
    event = str(interrupted.value.body or interrupted.value)
    assert "stream interrupted" in event or "stream_interrupted" in event, event
    seen.append(event)
    assert upstream.calls == 4

    gw.stop()  # drains capture
    seen += [caplog.text, "\n".join(r.getMessage() for r in caplog.records)]
    seen += [p.read_bytes().decode("latin-1") for p in tmp_path.iterdir() if p.is_file()]
    assert any("[SECRET]" in s for s in seen[-3:-2]), "the logs saw the echo, scrubbed"
    leaked = [f"{what} in output {i}" for i, s in enumerate(seen) for what in find_secrets(s)]
    assert not leaked, leaked


def test_a_config_error_never_prints_a_secret(known_secret: KnownSecret, tmp_path: Path) -> None:
    """``standby serve`` with a bad config prints one line; a key used as a route name, a key
    whose value is echoed by a validation message, and a bus URL's password are not in it."""
    key = f"AIza{known_secret('gemini key in config')[:35]}"
    password = known_secret("redis password")
    plain = known_secret("a key with no vendor shape")
    gemini = {"type": "gemini", "model": "m", "api_key": plain}
    cases = {
        # a key pasted as a route's name (the route names a backend that does not exist)
        "route name": {"backends": {"g": gemini}, "routes": {key: ["nope"]}},
        # the configured key itself as a route name: no shape, but it is the config's secret
        "own key as route name": {"backends": {"g": gemini}, "routes": {plain: ["nope"]}},
        # a password in a bus URL that is wrong
        "bus URL": {
            "backends": {"g": gemini},
            "routes": {"m": ["g"]},
            "capture": {"bus": f"sqlite://admin:{password}@db/events.db"},
        },
    }
    for name, config in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.yaml"
        path.write_text(yaml.safe_dump(config))
        run = subprocess.run(
            [sys.executable, "-m", "standby.cli", "serve", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 2, (name, run.stderr[-500:])
        line = run.stderr.strip().splitlines()[-1]
        assert line.startswith("standby: error: "), (name, line)
        assert "[" in line, (name, line)  # the secret's place is marked, not left out silently
        assert not find_secrets(run.stderr + run.stdout), (name, line)


def test_scrubber_removes_every_encoding_and_a_cut_off_start() -> None:
    secret = 'p@ss/w0rd+"quoted"-and-long'
    scrub = Scrubber([secret])
    for variant in encodings(secret):
        assert scrub(f"before {variant} after") == "before [SECRET] after", variant
    basic = base64.b64encode(f"user:{secret}".encode()).decode()
    assert secret not in scrub(basic) and "[SECRET]" in scrub(basic)
    assert scrub.cut(f"a message that stops at {secret[:9]}") == "a message that stops at [SECRET]"
    assert scrub.cut("ends in p@ss") == "ends in [SECRET]"  # MIN_CUT characters of it
    assert scrub.cut("ends in p@s") == "ends in p@s"
    assert scrub("nothing to see, p@ss alone is not it") == "nothing to see, p@ss alone is not it"
    assert Scrubber(["short"])("short stays") == "short stays"  # under MIN_CHARS: not a secret
    # In JSON text, a quote is escaped: only escaped forms are replaced, the JSON stays valid.
    doc = json.dumps({"a": f"x {secret} y", "b": secret}).encode()
    assert json.loads(scrub.json(doc)) == {"a": "x [SECRET] y", "b": "[SECRET]"}


def test_a_key_added_by_a_reload_is_scrubbed_from_captures(
    known_secret: KnownSecret, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """A key with no telltale shape (redaction's rules keep it) reaches the scrubber's list
    when ``POST /admin/keys/reload`` adds it: a client pasting it into a prompt after the
    reload finds it nowhere in the capture database."""
    admin = known_secret("admin key", "adm-")
    first = known_secret("first gateway key", "sk-gw-")
    added = "Lorem-ipsum-dolor-" + known_secret("a key made of words")[:12]
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{first}\n")
    bus = tmp_path / "events.db"
    sim = AiohttpServer(build_app(SimGemini()))
    sim.start()
    config = _config(sim.url, sim.url, "sim-key-unused", bus)
    config["server"].update(api_keys_file=str(keys), admin_keys=[admin])
    config["routes"] = {ROUTE: ["cut"]}
    try:
        gw = start_gateway(config)
        keys.write_text(f"{first}\n{added}\n")
        reload = httpx.post(
            f"{gw.url}/admin/keys/reload", headers={"authorization": f"Bearer {admin}"}
        )
        assert reload.json() == {"api_keys": 2, "admin_keys": 1, "every_worker": False}
        client = gw.client(api_key=added)
        answer = client.chat.completions.create(
            model=ROUTE, messages=[{"role": "user", "content": f"my new key is {added}, keep it"}]
        )
        assert answer.choices[0].message.content
        gw.stop()  # drains capture
    finally:
        sim.stop()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("events"))
    assert b"my new key is [SECRET], keep it" in stored
    assert not find_secrets(stored.decode("latin-1"))


async def test_the_judges_client_never_repeats_its_key(
    known_secret: KnownSecret, echo: tuple[str, Echo], caplog: pytest.LogCaptureFixture
) -> None:
    """The service LLM (judge, synth) is a process of its own: building its client registers
    its key, so an upstream that echoes it in a 400 or a retried 500 leaves it in no error or
    log record (the report hook above also searches everything pytest captured)."""
    from standby.service_llm import ServiceLLM, ServiceLLMError, ServiceLLMSettings

    key = known_secret("judge key echoed back", "AIza")
    url, upstream = echo
    caplog.set_level("DEBUG")
    settings = ServiceLLMSettings(
        service_llm_base_url=url,
        service_llm_api_key=key,
        service_llm_backoff_s=0.01,
        service_llm_max_backoff_s=0.02,
        service_llm_max_retries=1,
    )
    messages = []
    for status in (400, 500):
        upstream.status = status
        async with ServiceLLM(settings) as llm:
            with pytest.raises(ServiceLLMError) as raised:
                await llm.complete("Rate this.")
        messages.append(str(raised.value))
    assert upstream.calls >= 3  # the 400 once, the 500 retried
    assert all("API key not valid" in m and "[SECRET]" in m for m in messages), messages
    assert find_secrets("\n".join(messages) + caplog.text) == []
