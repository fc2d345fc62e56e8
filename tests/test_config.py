"""Config loading: the shipped example config loads and works; every bad file fails with one
line that names the file, the field and the problem."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from standby.config import load_settings, parse_settings
from standby.errors import ConfigError
from tests.fixtures.gateway import StartGateway
from tests.fixtures.sim import RunningSim

EXAMPLE = Path(__file__).parent.parent / "config" / "standby.yaml"
ROUTE = "gemini-3.8-flash"  # the example's route alias, the name of its Gemini model


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDBY_API_KEY", "gw-key")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key")


def test_design_example_loads(env: None) -> None:
    settings = load_settings(EXAMPLE)
    assert settings.routes[ROUTE].backends == ["gemini", "gemma"]
    gemini = settings.backends["gemini"]
    assert gemini.type == "gemini" and gemini.api_key is not None
    assert gemini.api_key.get_secret_value() == "gemini-key"
    assert "gemini-key" not in repr(settings)  # secrets never print
    assert settings.backends["vllm"].type == "openai"
    assert settings.breaker.failures == 5


def test_design_example_works_against_the_simulator(
    env: None, sim: RunningSim, tiny_model_dir: Path, start_gateway: StartGateway
) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    # The only two things that cannot be reached from here: Google, and the Hub's Gemma.
    data["backends"]["gemini"]["base_url"] = sim.url
    data["backends"]["gemma"]["model"] = str(tiny_model_dir)
    data["server"]["port"] = 0
    gw = start_gateway(data)
    answer = gw.client(api_key="gw-key").chat.completions.create(
        model=ROUTE, messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content
    sim.sim.set_fault("error-503")
    # A short answer: the example's Gemma writes up to 512 tokens in bfloat16 on a CPU, which a
    # loaded machine can stretch past the client's 30 s.
    raw = gw.client(api_key="gw-key").chat.completions.with_raw_response.create(
        model=ROUTE, messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    assert raw.headers["x-standby-backend"] == "gemma"


def minimal() -> dict[str, object]:
    return {
        "backends": {"g": {"type": "gemini", "model": "m"}},
        "routes": {"m": ["g"]},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(surprise=1), "surprise: Extra inputs are not permitted"),
        (
            lambda d: d.update(routes={"m": ["nope"]}),
            "routes.m: names backend 'nope', which is not defined (defined: g)",
        ),
        (lambda d: d.update(routes={"m": []}), "routes.m.backends: List should have at least 1"),
        (lambda d: d.update(routes={}), "routes: Dictionary should have at least 1 item"),
        (
            lambda d: d["backends"]["g"].update(timeouts={"connect_s": -1}),
            "backends.g.timeouts.connect_s: Input should be greater than 0",
        ),
        (lambda d: d["backends"]["g"].update(type="grok"), "backends.g: Input tag 'grok'"),
        (lambda d: d["backends"]["g"].update(modle="x"), "backends.g.modle: Extra inputs"),
        (lambda d: d.update(server={"port": "http"}), "server.port: Input should be a valid int"),
        (
            lambda d: d.update(server={"api_keys": ["${STANDBY_TEST_UNSET}"]}),
            "server.api_keys[0]: environment variable STANDBY_TEST_UNSET is not set",
        ),
    ],
)
def test_bad_config_is_one_clear_line(change: object, message: str) -> None:
    data = minimal()
    change(data)  # type: ignore[operator]
    with pytest.raises(ConfigError) as err:
        parse_settings(data, "standby.yaml")
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("standby.yaml: ")
    assert message in text


def test_env_default_and_shorthand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STANDBY_TEST_UNSET", raising=False)
    data = minimal()
    data["backends"]["g"]["api_key"] = "${STANDBY_TEST_UNSET:-fallback-key}"  # type: ignore[index]
    settings = parse_settings(data)
    assert settings.backends["g"].api_key.get_secret_value() == "fallback-key"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server: [unclosed", "invalid YAML (line 1"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
        ("", "expected a mapping at the top level"),
    ],
)
def test_unreadable_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "standby.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.yaml")


def serve_process(path: Path) -> subprocess.CompletedProcess[str]:
    """``standby serve --config path`` through the real console entry point (a bad file: it
    exits at once)."""
    return subprocess.run(
        [sys.executable, "-m", "standby.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "standby.yaml"
    path.write_text(yaml.safe_dump({**minimal(), "routes": {"m": ["ghost"]}}))
    run = serve_process(path)
    assert run.returncode == 2
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"standby: error: {path}: routes.m: names backend 'ghost'")


def test_a_taken_port_is_said_before_any_model_loads(tmp_path: Path) -> None:
    """The port is bound first: the backend here names a model that does not exist, so a
    gateway that loaded backends first would fail on the model, not the port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "standby.yaml"
        config = {
            "server": {"host": "127.0.0.1", "port": port},
            "backends": {"gemma": {"type": "local", "model": str(tmp_path / "no-such-model")}},
            "routes": {"m": ["gemma"]},
            "capture": {"enabled": False},
        }
        path.write_text(yaml.safe_dump(config))
        run = serve_process(path)
    assert run.returncode == 1
    assert (
        run.stderr == f"standby: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )
