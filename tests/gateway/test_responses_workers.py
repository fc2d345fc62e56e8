"""Stored responses under ``standby serve --workers 2``: each worker answers before it writes
(in batches, every ``responses.write_interval_s``), yet a response one worker has just answered
is continued, retrieved and deleted through the other at once (a miss on an id made moments
ago reads again until the writer's time is up), and SIGTERM writes what each worker holds; on
a SQLite file the workers share and on the real Redis."""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.fixtures.gateway import ROUTE, base_config
from tests.fixtures.sim import RunningSim
from tests.gateway.test_responses_state import Store, store  # noqa: F401 (a fixture)
from tests.gateway.test_workers import Served, serve_workers  # noqa: F401 (a fixture)


class Connection:
    """A kept-alive connection that one worker answers."""

    def __init__(self, served: Served, worker: psutil.Process) -> None:
        port = int(served.url.rsplit(":", 1)[1])
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        with served.only(worker):  # the other worker is stopped: this one accepts it
            assert self.call("GET", "/healthz")[0] == 200

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        headers = {"content-type": "application/json"} if body is not None else {}
        self.http.request(method, path, json.dumps(body) if body is not None else None, headers)
        answer = self.http.getresponse()
        return answer.status, json.loads(answer.read())


@pytest.fixture
def connections(sim: RunningSim, serve_workers: Any, store: Store) -> Iterator[Any]:  # noqa: F811
    opened: list[Connection] = []

    def start(write_interval_s: float) -> tuple[Served, Connection, Connection]:
        config = base_config(sim.url, None)
        config["responses"] = {"url": store.url, "write_interval_s": write_interval_s}
        served = serve_workers(config)
        a, b = served.workers()
        opened.extend([Connection(served, a), Connection(served, b)])
        return served, opened[-2], opened[-1]

    yield start
    for c in opened:
        with contextlib.suppress(OSError):
            c.http.close()


@pytest.mark.timeout(180)
def test_a_response_answered_by_one_worker_is_read_at_once_by_the_other(
    connections: Any,
) -> None:
    """Half a second between writes: the other worker reads its file before the response is
    there, and waits for it instead of answering 404."""
    _, a, b = connections(0.5)
    for n in range(4):
        maker, other = (a, b) if n % 2 == 0 else (b, a)
        status, first = maker.call("POST", "/v1/responses", {"model": ROUTE, "input": f"Hi {n}"})
        assert status == 200, first
        status, again = other.call("GET", f"/v1/responses/{first['id']}")
        assert (status, again) == (200, first)
        ask = {"model": ROUTE, "input": "And?", "previous_response_id": first["id"]}
        status, second = other.call("POST", "/v1/responses", ask)
        assert status == 200, second
        assert second["previous_response_id"] == first["id"]
        status, deleted = maker.call("DELETE", f"/v1/responses/{second['id']}")
        assert (status, deleted["deleted"]) == (200, True)
        assert other.call("GET", f"/v1/responses/{second['id']}")[0] == 404
    status, error = a.call("GET", "/v1/responses/resp_unknown")  # not a recent id: no wait
    assert (status, error["error"]["code"]) == (404, "response_not_found")


@pytest.mark.timeout(180)
def test_sigterm_writes_what_every_worker_holds(connections: Any, store: Store) -> None:  # noqa: F811
    """Five seconds between writes: nothing is written when SIGTERM comes, all of it after."""
    served, a, b = connections(5)
    made = set()
    for n in range(6):
        status, answer = (a, b)[n % 2].call(
            "POST", "/v1/responses", {"model": ROUTE, "input": f"Keep {n}"}
        )
        assert status == 200, answer
        made.add(answer["id"])
    assert store.ids_now() == []
    assert served.stop() == 0
    assert store.ids_now() == sorted(made)
