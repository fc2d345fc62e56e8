"""Admission caps and rate limits shared through the run directory's tables: two workers'
views act as one host, a dead worker's slot is cleared, and concurrent processes lose no
count (the record lock)."""

from __future__ import annotations

import multiprocessing
import os
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from standby.config import Settings, parse_settings
from standby.errors import Overloaded, RateLimited
from standby.gateway.admission import Admission
from standby.gateway.metrics import Metrics
from standby.gateway.shared_limits import (
    BUCKETS,
    WAYS,
    SharedAdmission,
    SharedRateLimiter,
    admission_for,
    clear_worker,
    create_tables,
    limiter_for,
)
from standby.gateway.shared_table import SharedTable
from standby.gateway.worker_env import (
    RUN_DIR_ENV,
    WORKER_INDEX_ENV,
    admission_path,
    rate_buckets_path,
)
from tests.fixtures.gateway import ROUTE, base_config


def settings(**server: Any) -> Settings:
    config = base_config("http://127.0.0.1:9", None)
    config["routes"]["other"] = ["gemini"]
    config["server"].update(workers=3, **server)
    return parse_settings(config, "test")


def worker(
    run: Path, s: Settings, index: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[Admission, SharedRateLimiter | None]:
    """What the gateway of worker ``index`` builds (the factories, as app.Gateway calls them):
    the host's admission when a cap is set, else the worker's own (nothing to share)."""
    monkeypatch.setenv(RUN_DIR_ENV, str(run))
    monkeypatch.setenv(WORKER_INDEX_ENV, str(index))
    admission = admission_for(s, Metrics(CollectorRegistry()))
    limiter = limiter_for(s)
    capped = s.server.max_concurrency or any(r.max_concurrency for r in s.routes.values())
    assert isinstance(admission, SharedAdmission) == bool(capped)
    assert limiter is None or isinstance(limiter, SharedRateLimiter)
    return admission, limiter


def test_one_process_gets_the_plain_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    s = settings(max_concurrency=2, rate_limit_per_key={"requests_per_s": 1})
    assert type(admission_for(s, Metrics())).__name__ == "Admission"
    assert type(limiter_for(s)).__name__ == "RateLimiter"


def test_no_cap_shares_no_admission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a supervisor with no max_concurrency anywhere nothing is refused, so a worker
    counts its requests in flight on its own (no lock per request); with a cap, the host's."""
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    create_tables(tmp_path, settings(max_concurrency=2))
    assert type(admission_for(settings(), Metrics(CollectorRegistry()))) is Admission
    capped = admission_for(settings(max_concurrency=2), Metrics(CollectorRegistry()))
    assert type(capped) is SharedAdmission


def test_the_global_cap_counts_every_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings(max_concurrency=3)
    create_tables(tmp_path, s)
    (a, _), (b, _) = worker(tmp_path, s, 0, monkeypatch), worker(tmp_path, s, 1, monkeypatch)
    a.enter(ROUTE)
    b.enter("other")
    b.enter(ROUTE)
    with pytest.raises(Overloaded, match="limit of 3 requests"):
        a.enter("other")
    a.leave(ROUTE)
    a.enter("other")  # one left, one came
    with pytest.raises(Overloaded):
        b.enter(ROUTE)


def test_a_route_cap_counts_every_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = base_config("http://127.0.0.1:9", None)
    config["routes"]["other"] = ["gemini"]
    config["routes"][ROUTE] = {"backends": ["gemini"], "max_concurrency": 2}
    config["server"]["workers"] = 2
    s = parse_settings(config, "test")
    create_tables(tmp_path, s)
    (a, _), (b, _) = worker(tmp_path, s, 0, monkeypatch), worker(tmp_path, s, 1, monkeypatch)
    a.enter(ROUTE)
    b.enter(ROUTE)
    with pytest.raises(Overloaded, match=f"Route '{ROUTE}' is at its limit of 2"):
        a.enter(ROUTE)
    a.enter("other")  # another route: no cap
    b.leave(ROUTE)
    a.enter(ROUTE)


def test_a_dead_workers_requests_are_cleared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings(max_concurrency=2)
    create_tables(tmp_path, s)
    (a, _), (b, _) = worker(tmp_path, s, 0, monkeypatch), worker(tmp_path, s, 1, monkeypatch)
    a.enter(ROUTE)
    a.enter(ROUTE)  # worker 0 dies with these two in flight
    with pytest.raises(Overloaded):
        b.enter(ROUTE)
    clear_worker(tmp_path, s, 0)  # the supervisor, before restarting it
    b.enter(ROUTE)
    b.enter(ROUTE)
    with pytest.raises(Overloaded):
        b.enter(ROUTE)


def test_a_keys_bucket_is_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(rate_limit_per_key={"requests_per_s": 0.5, "burst": 4})
    create_tables(tmp_path, s)
    (_, a), (_, b) = worker(tmp_path, s, 0, monkeypatch), worker(tmp_path, s, 1, monkeypatch)
    assert a is not None and b is not None
    for limiter in (a, b, a, b):
        limiter.take("k1")
    for limiter in (a, b):
        with pytest.raises(RateLimited):
            limiter.take("k1")
    a.take("k2")  # another key: its own bucket
    b.take(None)  # auth off: the anonymous bucket


def test_a_full_record_evicts_the_key_counted_longest_ago(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys that hash to one record: the ninth takes the way of the one counted first."""
    s = settings(rate_limit_per_key={"requests_per_s": 0.001, "burst": 1})
    create_tables(tmp_path, s)
    _, limiter = worker(tmp_path, s, 0, monkeypatch)
    assert limiter is not None
    hexes = (f"{i:016x}" for i in range(200_000))
    same = [k for k in hexes if zlib.crc32(k.encode()) % BUCKETS == 7]
    keys = same[: WAYS + 1]
    for key in keys[:WAYS]:
        limiter.take(key)
        time.sleep(0.001)
    for key in keys[:WAYS]:
        with pytest.raises(RateLimited):
            limiter.take(key)
    limiter.take(keys[WAYS])  # a new key: the first one's entry makes room
    limiter.take(keys[0])  # which is now new again (its bucket was the oldest)
    with pytest.raises(RateLimited):
        limiter.take(keys[WAYS])  # ...and kept the newer key, evicting keys[1]
    limiter.take(keys[1])


def _take_all(run: str, s: Settings, index: int) -> int:
    os.environ[RUN_DIR_ENV] = run
    os.environ[WORKER_INDEX_ENV] = str(index)
    limiter = limiter_for(s)
    assert limiter is not None
    taken = 0
    for _ in range(4000):
        try:
            limiter.take("k")
            taken += 1
        except RateLimited:
            pass
    return taken


def _taker(run: str, s: Settings, index: int, out: Any) -> None:
    out.put(_take_all(run, s, index))


def test_concurrent_processes_spend_one_bucket(tmp_path: Path) -> None:
    """Three processes take from one key's bucket of 3000 at once: exactly 3000 (and what
    refilled meanwhile) are granted, none twice."""
    s = settings(rate_limit_per_key={"requests_per_s": 0.001, "burst": 3000})
    create_tables(tmp_path, s)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_taker, args=(str(tmp_path), s, i, out)) for i in range(3)]
    for p in procs:
        p.start()
    granted = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sum(granted) == 3000


def test_tables_are_sized_for_the_settings(tmp_path: Path) -> None:
    s = settings()
    create_tables(tmp_path, s)
    assert admission_path(tmp_path).stat().st_size == 3 * 3 * 4  # 3 workers x (all + 2 routes)
    table = SharedTable(rate_buckets_path(tmp_path))
    assert len(table.map) == BUCKETS * WAYS * 32
    table.close()
