"""A backend that answers without end (issue #19 item 2) against a real ``standby serve``
process: a 200 whose body never ends (plain and gzip, to chat and to embeddings), an SSE line
that never ends, an endless stream of valid empty events, a 500 whose body never ends. Each
time the gateway stops reading at the backend's cap, fails over to the simulated Gemini (the
client, the official openai SDK, gets its answer), counts the failure with reason
``too_large`` (``server_error`` for the 500), and its peak memory during the attack grows by
less than 3 times the largest cap.

The gateway runs in its own process so that its peak RSS (``VmHWM``, reset through
``/proc/PID/clear_refs`` before each attack) is its own. The figures go to the drill report
(docs/reliability.md, "Upstream answers")."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from standby.gateway.metrics_page import RENDERS_PER_S
from standby.sim.background import free_port
from tests.fixtures.drill_report import Record
from tests.fixtures.gateway import ROUTE
from tests.fixtures.hostile_upstream import Hostile
from tests.fixtures.serve_process import wait_healthy
from tests.fixtures.sim import RunningSim

MiB = 1 << 20
LIMITS = {"max_body_bytes": 8 * MiB, "max_event_bytes": 4 * MiB, "max_stream_bytes": 8 * MiB}
BOUND = 3 * max(LIMITS.values())
# (attack, how it is asked: whole / stream / embed, the reason it is counted with)
ATTACKS = [
    ("body", "whole", "too_large"),
    ("gzip", "whole", "too_large"),
    ("body", "embed", "too_large"),
    ("line", "stream", "too_large"),
    ("events", "stream", "too_large"),
    ("error", "whole", "server_error"),  # its body is read up to 64 KiB
]
IDS = [f"{attack}-{how}" for attack, how, _ in ATTACKS]
# Only the caps end these attacks: the hostile backends' time limits are far away.
PATIENT = {"connect_s": 2, "first_token_s": 60, "idle_s": 60, "total_s": 120}
SPACE = "gemini-embedding-001"


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    url: str

    def status(self, field: str) -> int:
        """A ``/proc/PID/status`` figure in bytes (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def metric(self, name: str, **labels: str) -> float:
        # /metrics renders at most RENDERS_PER_S times a second once its burst is spent (this
        # module's tests scrape one gateway dozens of times): a pause of one refill before each
        # scrape makes every page a fresh one.
        time.sleep(1.1 / RENDERS_PER_S)
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and labels.items() <= s.labels.items()
        )


@pytest.fixture(scope="module")
def gateway(
    hostile_upstream: Hostile, gemini_sim: RunningSim, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Serve]:
    port = free_port()
    backends: dict[str, Any] = {
        f"hostile_{attack}_{how}": {
            "type": "openai",
            "base_url": f"{hostile_upstream.url}/{attack}/v1",
            "model": "m",
            "timeouts": PATIENT,
            "limits": LIMITS,
        }
        | ({"embeddings": {"space": SPACE}} if how == "embed" else {})
        for attack, how, _ in ATTACKS
    }
    backends["gemini"] = {"type": "gemini", "model": ROUTE, "base_url": gemini_sim.url}
    backends["gemini_embed"] = {
        "type": "gemini",
        "model": SPACE,
        "base_url": gemini_sim.url,
        "embeddings": {"space": SPACE},
    }
    routes: dict[str, Any] = {
        "warm": ["gemini"],
        "warm_embed": {"kind": "embeddings", "backends": ["gemini_embed"]},
    }
    for attack, how, _ in ATTACKS:
        if how == "embed":
            chain = [f"hostile_{attack}_{how}", "gemini_embed"]
            routes[f"{attack}_{how}"] = {"kind": "embeddings", "backends": chain}
        else:
            routes[f"{attack}_{how}"] = [f"hostile_{attack}_{how}", "gemini"]
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "backends": backends,
        "routes": routes,
        "breaker": {"failures": 100},
        "capture": {"enabled": False},
    }
    path = tmp_path_factory.mktemp("limits") / "standby.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "standby.cli", "--log-level", "warning", "serve"]
    proc = subprocess.Popen(
        [*command, "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        yield Serve(proc, url)
    finally:
        proc.terminate()
        proc.wait(30)


def ask(client: openai.OpenAI, route: str, how: str) -> tuple[bool, str, str]:
    """Whether an answer came, its backend and fallback reason (the response headers)."""
    messages: Any = [{"role": "user", "content": "Hello!"}]
    if how == "embed":
        raw: Any = client.embeddings.with_raw_response.create(
            model=route, input=["Hello!"], encoding_format="float"
        )
        answered = bool(raw.parse().data[0].embedding)
    elif how == "stream":
        raw = client.chat.completions.with_raw_response.create(
            model=route, messages=messages, stream=True
        )
        answered = bool("".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices))
    else:
        raw = client.chat.completions.with_raw_response.create(model=route, messages=messages)
        answered = bool(raw.parse().choices[0].message.content)
    headers = raw.headers
    return answered, headers["x-standby-backend"], headers.get("x-standby-fallback-reason", "")


@pytest.mark.parametrize(("attack", "how", "expected"), ATTACKS, ids=IDS)
def test_an_endless_answer_is_cut_at_the_cap_and_fails_over_in_bounded_memory(
    gateway: Serve,
    hostile_upstream: Hostile,
    drill_report: Record,
    attack: str,
    how: str,
    expected: str,
) -> None:
    route = f"{attack}_{how}"
    backend = f"hostile_{route}"
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    with client:
        warm = "warm_embed" if how == "embed" else "warm"
        assert ask(client, warm, how)[1].startswith("gemini")  # the code paths are warm
        before = gateway.status("VmRSS")
        gateway.reset_peak()
        started = time.perf_counter()
        answered, answered_by, reason = ask(client, route, how)
        seconds = time.perf_counter() - started
        growth = gateway.status("VmHWM") - before
    assert answered and answered_by.startswith("gemini") and reason == expected
    errors = gateway.metric("standby_upstream_errors_total", backend=backend)
    counted = gateway.metric("standby_upstream_errors_total", backend=backend, reason=expected)
    assert errors == counted == 1
    assert gateway.metric("standby_fallbacks_total", route=route, reason=expected) == 1
    assert growth < BOUND, f"peak RSS grew {growth / MiB:.1f} MiB"
    drill_report(
        drill=f"endless upstream answer: {attack} ({how})",
        tried=f"caps {', '.join(f'{k} {v // MiB} MiB' for k, v in LIMITS.items())}",
        sent_by_upstream_mib=round(hostile_upstream.sent[attack] / MiB, 1),
        peak_rss_growth_mib=round(growth / MiB, 1),
        seconds=round(seconds, 2),
        answered_by=answered_by,
        reason=reason,
    )
