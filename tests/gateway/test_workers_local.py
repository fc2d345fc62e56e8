"""``standby serve --workers 2`` with a ``local`` backend: both workers answer through the
host's one model process (the tiny Gemma, real processes, the official ``openai`` SDK).

The simulated Gemini is the primary and fails (503), so the route ``gemini-2.5-flash`` is
answered by the fallback; ``local-only`` routes to the local backend alone."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from standby.sim.tiny_model import build_tiny_lora_adapter
from tests.fixtures.gateway import ROUTE, base_config
from tests.fixtures.sim import RunningSim
from tests.fixtures.tool_calls import ASK_WEATHER, PARIS, TOOLS
from tests.fixtures.workers import Served, failed_start
from tests.pipeline.helpers import standby_models

LOCAL = "local-only"
HELLO = [{"role": "user", "content": "hello"}]
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no"]}, "ok": {"type": "boolean"}},
    "required": ["answer", "ok"],
    "additionalProperties": False,
}


def torch_loaded(p: psutil.Process) -> bool:
    """Whether ``p`` has torch's library mapped (it imported torch: it can hold a model)."""
    return any("libtorch" in m.path for m in p.memory_maps())


def sdk(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=60)


def config_for(sim: RunningSim, model: Path) -> dict[str, Any]:
    config = base_config(sim.url, model)
    config["backends"]["gemma"].update(max_new_tokens=2000, max_queue=1, max_batch_size=1)
    config["routes"][LOCAL] = ["gemma"]
    return config


@pytest.mark.timeout(300)
def test_both_workers_answer_through_one_model_process(
    sim: RunningSim, tiny_tool_model_dir: Path, serve_workers: Any
) -> None:
    sim.sim.set_fault("error-503")
    served = serve_workers(config_for(sim, tiny_tool_model_dir))
    (host,) = served.model_hosts()
    assert host.ppid() == served.proc.pid
    workers = served.workers()
    assert torch_loaded(host)
    assert not any(torch_loaded(w) for w in [*workers, psutil.Process(served.proc.pid)])

    for worker in workers:
        with served.only(worker), sdk(served) as client:
            whole = client.chat.completions.create(model=ROUTE, messages=HELLO, max_tokens=8)
            assert whole.choices[0].message.content
            assert whole.model_extra is not None
            assert whole.model_extra["standby"]["backend"] == "gemma"
            assert whole.model_extra["standby"]["provenance"] == "fallback"
            assert whole.usage is not None and whole.usage.completion_tokens == 8

            chunks = list(
                client.chat.completions.create(
                    model=ROUTE, messages=HELLO, max_tokens=8, stream=True
                )
            )
            texts = [c.choices[0].delta.content for c in chunks if c.choices]
            assert len([t for t in texts if t]) > 1  # deltas, not one buffered piece
            assert chunks[-1].choices[0].finish_reason == "length"

            called = client.chat.completions.create(
                model=ROUTE,
                messages=ASK_WEATHER,  # type: ignore[arg-type]
                tools=TOOLS,  # type: ignore[arg-type]
                temperature=0,
            )
            (call,) = called.choices[0].message.tool_calls or []
            assert called.choices[0].finish_reason == "tool_calls"
            assert call.function.name == "get_weather"  # type: ignore[union-attr]
            assert json.loads(call.function.arguments) == json.loads(PARIS.arguments)  # type: ignore[union-attr]

            fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}
            shaped = client.chat.completions.create(
                model=LOCAL,
                messages=HELLO,  # type: ignore[arg-type]
                response_format=fmt,  # type: ignore[arg-type]
                temperature=0,
            )
            assert set(json.loads(shaped.choices[0].message.content or "")) == {"answer", "ok"}

            bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}}
            with pytest.raises(openai.BadRequestError) as caught:  # the model process said so
                client.chat.completions.create(
                    model=LOCAL,
                    messages=HELLO,  # type: ignore[arg-type]
                    response_format=bad,  # type: ignore[arg-type]
                )
            assert "Invalid type: foo" in caught.value.message

    # A client that goes away mid-stream stops its generation in the model process.
    with sdk(served) as client:
        stream = client.chat.completions.create(
            model=LOCAL, messages=HELLO, max_tokens=2000, stream=True
        )
        next(iter(stream))
        busy = host.cpu_times()
        time.sleep(0.5)
        spent = sum(host.cpu_times()[:2]) - sum(busy[:2])
        assert spent > 0.2, "the long generation did not run"
        stream.close()
    time.sleep(0.3)
    before = host.cpu_times()
    time.sleep(1.0)
    assert sum(host.cpu_times()[:2]) - sum(before[:2]) < 0.2, "its row kept generating"
    assert served.chat() == 200

    # Its queue full (one running, one waiting of max_queue 1): the backend is skipped as busy
    # by every worker, its breaker untouched, as in one process.
    with sdk(served) as client:
        running = client.chat.completions.create(
            model=LOCAL, messages=HELLO, max_tokens=2000, stream=True
        )
        next(iter(running))
        waited: list[int] = []
        waiting = threading.Thread(target=lambda: waited.append(served.chat()))
        waiting.start()
        deadline = time.monotonic() + 10
        while served.total("standby_backend_ready", backend="gemma") != 0:
            assert time.monotonic() < deadline, "the full queue was not seen"
            time.sleep(0.05)
        for worker in workers:
            with served.only(worker), httpx.Client(timeout=30) as http:
                r = http.post(
                    f"{served.url}/v1/chat/completions", json={"model": LOCAL, "messages": HELLO}
                )
            assert r.status_code == 503, r.text
            (error,) = r.json()["standby"]["errors"]
            assert (error["error"], error["reason"]) == ("BackendBusy", "busy")
        running.close()
        waiting.join(30)
    assert waited == [200]
    assert served.total("standby_breaker_state", backend="gemma") == 0

    # The model process dies: requests fail fast meanwhile, it is restarted, the same workers
    # use the new one.
    host.kill()
    began = time.monotonic()
    with httpx.Client(timeout=30) as http:
        r = http.post(f"{served.url}/v1/chat/completions", json={"model": LOCAL, "messages": HELLO})
    assert r.status_code == 503, r.text
    assert time.monotonic() - began < 2
    deadline = time.monotonic() + 90
    while served.chat() != 200:
        assert time.monotonic() < deadline, served.log()
        time.sleep(0.2)
    (restarted,) = served.model_hosts()
    assert restarted.pid != host.pid
    assert {w.pid for w in served.workers()} == {w.pid for w in workers}
    assert served.total("standby_worker_restarts_total", kind="model_host") == 1
    assert served.total("standby_worker_restarts_total", kind="worker") == 0
    assert "the model process exited with code -9; restarting it" in served.stderr.read_text()

    # SIGTERM to the whole process group (systemd, Ctrl-C): a stream in flight finishes through
    # the model process, which stops only once the workers have drained.
    with sdk(served) as client:
        stream = client.chat.completions.create(
            model=LOCAL, messages=HELLO, max_tokens=300, temperature=0, stream=True
        )
        pieces = iter(stream)
        next(pieces)
        os.killpg(served.proc.pid, signal.SIGTERM)
        rest = list(pieces)
    assert rest[-1].choices[0].finish_reason in ("length", "stop")
    assert served.proc.wait(60) == 0
    assert not psutil.pid_exists(restarted.pid)


@pytest.mark.timeout(300)
def test_a_promotion_under_load_swaps_once_and_fails_no_request(
    tiny_model_dir: Path,
    tiny_adapter_dir: Path,
    tmp_path: Path,
    serve_workers: Any,
) -> None:
    second = build_tiny_lora_adapter(tiny_model_dir, tmp_path / "lora-2", seed=2)
    registry = f"sqlite:///{tmp_path / 'events.db'}"
    config = base_config("http://127.0.0.1:1", tiny_model_dir)
    config["routes"] = {ROUTE: ["gemma"]}
    config["registry"] = {"follow": ["gemma"], "url": registry, "poll_s": 0.1}
    served = serve_workers(config)

    errors: list[BaseException] = []
    answered: list[str] = []
    stop = threading.Event()

    def client(stream: bool) -> None:
        with sdk(served) as api:
            while not stop.is_set():
                try:
                    if stream:
                        chunks = api.chat.completions.create(
                            model=ROUTE, messages=HELLO, max_tokens=8, stream=True
                        )
                        answered.append(
                            "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                        )
                    else:
                        done = api.chat.completions.create(
                            model=ROUTE, messages=HELLO, max_tokens=8
                        )
                        answered.append(done.choices[0].message.content or "")
                except (openai.OpenAIError, httpx.HTTPError) as e:
                    errors.append(e)

    def reported(version: str) -> bool:
        """Every worker serves ``version``: the page shows each series' maximum over them."""
        info = {
            dict(labels)["version"]: value
            for (name, labels), value in served.metrics().items()
            if name == "standby_fallback_model_info"
        }
        return info.get(version) == 1 and sum(info.values()) == 1

    threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        standby_models(registry, "register", "--version", "v1", "--adapter", str(tiny_adapter_dir))
        standby_models(registry, "register", "--version", "v2", "--adapter", str(second))
        for version in ("v1", "v2"):
            standby_models(registry, "promote", version)
            deadline = time.monotonic() + 30
            while not reported(version):
                assert time.monotonic() < deadline, f"not every worker reports {version}"
                time.sleep(0.1)
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    assert len(answered) > 20
    # One process swapped, once per promotion (the workers only report it).
    assert served.stderr.read_text().count("gemma: now serving") == 2
    assert served.stop() == 0


def test_a_model_that_cannot_load_stops_the_port(tmp_path: Path) -> None:
    """The model process's one line and exit code, as one process says it."""
    config = base_config("http://127.0.0.1:9", tmp_path / "no-model")
    done = failed_start(config, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"standby: error: gemma: model '{tmp_path / 'no-model'}': no such directory"
    )
