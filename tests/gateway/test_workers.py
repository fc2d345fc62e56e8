"""``standby serve --workers 2``: real processes behind one port, against the simulated Gemini.

Which worker takes a connection is the kernel's choice; a test that needs a given worker to
serve stops the others (SIGSTOP): a stopped worker cannot accept, so the one left takes every
new connection from the shared queue."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from standby.sim.background import free_port
from standby.store import open_bus
from tests.fixtures.gateway import ROUTE, base_config
from tests.fixtures.sim import RunningSim
from tests.fixtures.workers import BODY, Served, failed_start
from tests.fixtures.workers import serve_workers as serve_workers  # re-exported for importers


@pytest.mark.timeout(180)
def test_metrics_sum_every_workers_requests(sim: RunningSim, serve_workers: Any) -> None:
    served = serve_workers(base_config(sim.url, None))
    a, b = served.workers()
    sent = 0
    for worker, n in ((a, 7), (b, 5)):  # each worker serves some of them
        with served.only(worker):
            client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
            with client:
                for _ in range(n):
                    answer = client.chat.completions.create(**BODY)
                    assert answer.choices[0].message.content
                    sent += 1
    for _ in range(8):  # and the kernel's choice
        assert served.chat() == 200
        sent += 1
    assert served.total("standby_requests_total", backend="gemini", outcome="ok") == sent
    assert served.total("standby_requests_total") == sent
    assert served.total("standby_request_duration_seconds_count") == sent
    assert served.total("standby_in_flight_requests") == 0
    assert served.total("standby_worker_restarts_total") == 0
    assert sim.sim.requests == sent
    assert served.stop() == 0


@pytest.mark.timeout(180)
def test_a_dead_worker_is_restarted_and_counted(sim: RunningSim, serve_workers: Any) -> None:
    served = serve_workers(base_config(sim.url, None))
    a, b = served.workers()
    assert served.chat() == 200
    a.kill()
    assert served.chat() == 200  # the other one serves meanwhile
    workers = served.wait_workers(2)
    assert b.pid in {w.pid for w in workers} and a.pid not in {w.pid for w in workers}
    assert served.total("standby_worker_restarts_total") == 1
    assert "exited with code -9; restarting it" in served.log()
    assert served.stop() == 0


@pytest.mark.timeout(180)
def test_sighup_reloads_the_keys_of_every_worker(
    sim: RunningSim, serve_workers: Any, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("sk-old-key-000000000000\n")
    config = base_config(sim.url, None)
    config["server"]["api_keys_file"] = str(keys)
    served = serve_workers(config)
    assert served.chat("sk-old-key-000000000000") == 200
    keys.write_text("sk-new-key-111111111111\n")
    served.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while served.log().count("keys reloaded") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    for worker in served.workers():
        with served.only(worker):
            assert served.chat("sk-new-key-111111111111") == 200
            assert served.chat("sk-old-key-000000000000") == 401
    assert served.stop() == 0


@pytest.mark.timeout(180)
def test_an_admin_key_reload_reaches_every_worker(
    sim: RunningSim, serve_workers: Any, tmp_path: Path
) -> None:
    """POST /admin/keys/reload lands on one worker; that worker loads the keys and asks the
    supervisor, whose SIGHUP brings the others to them too."""
    keys = tmp_path / "keys.txt"
    keys.write_text("sk-old-key-000000000000\n")
    config = base_config(sim.url, None)
    config["server"]["api_keys_file"] = str(keys)
    config["server"]["admin_keys"] = ["admin-key-222222222222"]
    served = serve_workers(config)
    keys.write_text("sk-new-key-111111111111\n")
    a, b = served.workers()
    with served.only(a), httpx.Client(timeout=30) as client:
        r = client.post(
            f"{served.url}/admin/keys/reload",
            headers={"authorization": "Bearer admin-key-222222222222"},
        )
    assert r.status_code == 200, r.text
    assert r.json() == {"api_keys": 1, "admin_keys": 1, "every_worker": True}
    deadline = time.monotonic() + 10
    while served.log().count("keys reloaded") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)  # a once, then a and b by the supervisor's SIGHUP
    with served.only(b):
        assert served.chat("sk-new-key-111111111111") == 200
        assert served.chat("sk-old-key-000000000000") == 401
    assert served.stop() == 0


@pytest.mark.timeout(180)
def test_one_breaker_for_the_host(sim: RunningSim, serve_workers: Any) -> None:
    """The primary fails: after ``failures`` calls in total (not per worker) no worker calls it;
    after the cool-down the host sends one probe; once it answers, both workers use it."""
    config = base_config(sim.url, None)
    # A backup on the same simulator whose model name is the fault spec "ok": it always answers.
    config["backends"]["backup"] = {**config["backends"]["gemini"], "model": "ok"}
    config["routes"][ROUTE] = ["gemini", "backup"]
    config["breaker"] = {"failures": 3, "cooldown_s": 2, "window_s": 30}
    served = serve_workers(config)
    a, b = served.workers()
    sim.sim.reset()
    sim.sim.set_fault("error-503")
    for i in range(12):  # the workers take turns
        with served.only((a, b)[i % 2]):
            assert served.chat() == 200
    assert sim.sim.by_model.get(ROUTE) == 3

    time.sleep(2.3)  # the cool-down is over: half-open, the fault still there
    for i in range(8):
        with served.only((a, b)[i % 2]):
            assert served.chat() == 200
    assert sim.sim.by_model.get(ROUTE) == 4  # one probe for the host, which failed

    sim.sim.set_fault("ok")
    time.sleep(2.3)
    for i in range(6):
        with served.only((a, b)[i % 2]):
            assert served.chat() == 200
    assert sim.sim.by_model.get(ROUTE) == 4 + 6  # the probe closed it for both
    states = {k: v for k, v in served.metrics().items() if k[0] == "standby_breaker_state"}
    assert set(states.values()) == {0.0}
    assert served.stop() == 0


def test_a_worker_that_cannot_start_stops_the_port(tmp_path: Path) -> None:
    """A start-up error (here the key file is missing) is the worker's one line, and the
    supervisor exits with its code instead of restarting it for ever."""
    config = base_config("http://127.0.0.1:9", None)
    config["server"]["api_keys_file"] = str(tmp_path / "missing-keys.txt")
    config["server"]["port"] = free_port()
    done = failed_start(config, tmp_path)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("standby: error:")]
    assert errors and all("missing-keys.txt" in line for line in errors), done.stderr


def hang_on(served: Served, worker: psutil.Process, sim: RunningSim, in_flight: int) -> None:
    """A request that hangs at the backend, served by ``worker`` (in a thread, for ever)."""

    def send() -> None:
        with contextlib.suppress(httpx.HTTPError):
            served.chat()

    with served.only(worker):
        threading.Thread(target=send, daemon=True).start()
        deadline = time.monotonic() + 10
        while sim.sim.requests < in_flight:  # it reached the backend: it was admitted
            assert time.monotonic() < deadline, "the hanging request did not reach the backend"
            time.sleep(0.02)


@pytest.mark.timeout(180)
def test_max_concurrency_holds_for_the_host(sim: RunningSim, serve_workers: Any) -> None:
    """max_concurrency 2 with 2 workers: one request hanging in each is the host's 2, so a
    third gets 503 overloaded from either worker; a worker killed with its request in flight
    leaves no count behind (the supervisor clears its slot)."""
    config = base_config(sim.url, None)
    config["server"]["max_concurrency"] = 2
    config["backends"]["gemini"]["timeouts"] = {"first_token_s": 120, "total_s": 120}
    served = serve_workers(config)
    a, b = served.workers()
    sim.sim.reset()
    sim.sim.set_fault("hang")
    hang_on(served, a, sim, 1)
    hang_on(served, b, sim, 2)
    for worker in (a, b):
        with served.only(worker):
            with httpx.Client(timeout=30) as client:
                r = client.post(f"{served.url}/v1/chat/completions", json=BODY)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "overloaded"
            assert r.headers["retry-after"]
    assert served.total("standby_rejected_requests_total", scope="global") == 2

    sim.sim.set_fault("ok")
    a.kill()  # with its hanging request: the host has 1 in flight now, b's
    (restarted,) = (w for w in served.wait_workers(2) if w.pid != b.pid)
    for worker in (restarted, b):
        with served.only(worker):
            assert served.chat() == 200
    assert served.stop() == 0


@pytest.mark.timeout(180)
def test_a_keys_rate_limit_holds_for_the_host(sim: RunningSim, serve_workers: Any) -> None:
    """One key's bucket (burst 4, 0.2/s) for the host: the workers taking turns grant it 4
    requests (and what refilled meanwhile), not 4 each."""
    key = "sk-rate-limited-key-0000"
    config = base_config(sim.url, None)
    config["server"]["api_keys"] = [key]
    config["server"]["rate_limit_per_key"] = {"requests_per_s": 0.2, "burst": 4}
    served = serve_workers(config)
    a, b = served.workers()
    t0 = time.monotonic()
    statuses = []
    for i in range(12):
        with served.only((a, b)[i % 2]):
            statuses.append(served.chat(key))
    elapsed = time.monotonic() - t0
    ok, limited = statuses.count(200), statuses.count(429)
    assert ok + limited == 12, statuses
    assert 4 <= ok <= 4 + int(elapsed * 0.2), (statuses, elapsed)
    assert statuses[:4] == [200] * 4
    assert served.total("standby_rate_limited_total") == limited
    assert served.stop() == 0


def capture_writers(served: Served) -> list[psutil.Process]:
    """The capture writer processes under the supervisor (a dead one not yet reaped: not)."""
    found = []
    for p in psutil.Process(served.proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # ended (a zombie too)
            if "standby.gateway.capture_writer" in " ".join(p.cmdline()):
                found.append(p)
    return found


def events_in(db: Path) -> int:
    """Every event on the bus (a new consumer group each time reads them all)."""

    async def count() -> int:
        async with open_bus(f"sqlite:///{db}") as bus:
            group = f"audit-{time.monotonic_ns()}"
            return len(await bus.consume("inference.completed", group, "a", count=100_000))

    return asyncio.run(count())


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.timeout(180)
def test_one_capture_writer_for_the_host(
    sim: RunningSim, serve_workers: Any, tmp_path: Path
) -> None:
    """Both workers feed the supervisor's one writer process; killed, it is restarted, the
    workers connect to the new one, and every answer is written once."""
    db = tmp_path / "events.db"
    config = base_config(sim.url, None)
    config["capture"] = {"enabled": True, "bus": f"sqlite:///{db}", "flush_interval_s": 0.2}
    served = serve_workers(config)
    a, b = served.workers()
    (writer,) = capture_writers(served)
    assert writer.ppid() == served.proc.pid  # the supervisor's child, not a worker's
    for i in range(6):
        with served.only((a, b)[i % 2]):
            assert served.chat() == 200
    wait_for(lambda: events_in(db) == 6, "the first 6 answers were not written")

    writer.kill()
    wait_for(lambda: [w.pid for w in capture_writers(served)] not in ([], [writer.pid]), "restart")
    for i in range(6):
        with served.only((a, b)[i % 2]):
            assert served.chat() == 200
    assert len(capture_writers(served)) == 1
    wait_for(lambda: served.total("standby_capture_events_total", outcome="written") == 12, "12")
    assert served.total("standby_capture_events_total", outcome="dropped") == 0
    assert served.stop() == 0
    assert events_in(db) == 12
    assert "the host's writer exited with code -9; restarting it" in served.log()


def test_an_unusable_capture_bus_stops_the_port(tmp_path: Path) -> None:
    """The host's writer cannot open the bus: the same one line and exit code as one process."""
    config = base_config("http://127.0.0.1:9", None)
    config["server"]["port"] = free_port()
    config["capture"] = {"enabled": True, "bus": f"sqlite:///{tmp_path}/not-a-dir/e.db"}
    (tmp_path / "not-a-dir").write_text("a file")
    done = failed_start(config, tmp_path)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("standby: error: sqlite bus ") and "not-a-dir" in line
