"""Breakers shared through the run directory's table: two workers' breakers act as one, and
concurrent processes lose no count (the record lock)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from standby.config import Settings, parse_settings
from standby.gateway.breaker import State
from standby.gateway.shared_breakers import BreakerTable, SharedBreaker
from tests.fixtures.gateway import base_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(**breaker: float) -> Settings:
    config = base_config("http://127.0.0.1:9", None)
    config["backends"]["other"] = {**config["backends"]["gemini"]}
    config["breaker"] = {"failures": 3, "cooldown_s": 10, "window_s": 30, **breaker}
    return parse_settings(config, "test")


def two_workers(
    path: Path, s: Settings, backend: str = "gemini"
) -> tuple[SharedBreaker, SharedBreaker, Clock]:
    """The same backend's breaker in two workers (each its own mapping of the file)."""
    BreakerTable.create(path, s)
    clock = Clock()
    cfg = s.breaker_for(backend)
    made = [SharedBreaker(backend, cfg, BreakerTable(path, s), None, clock) for _ in range(2)]
    return made[0], made[1], clock


def test_failures_in_two_workers_open_the_breaker_for_both(tmp_path: Path) -> None:
    a, b, clock = two_workers(tmp_path / "breakers", settings())
    a.record_failure()
    b.record_failure()
    assert a.allow() and b.allow()
    a.record_failure()  # the third in total
    assert not a.allow() and not b.allow()
    assert b.current_state() == State.OPEN and b.seconds_until_retry() == 10
    clock.now += 10
    assert b.current_state() == State.HALF_OPEN
    assert b.allow()  # the one probe of the host
    assert not a.allow() and not b.allow()
    b.record_success()
    assert a.current_state() == State.CLOSED and a.allow()


def test_a_success_in_one_worker_resets_the_consecutive_count_of_both(tmp_path: Path) -> None:
    a, b, _ = two_workers(tmp_path / "breakers", settings())
    a.record_failure()
    a.record_failure()
    b.record_success()
    a.record_failure()
    b.record_failure()
    assert a.current_state() == State.CLOSED


def test_the_window_counts_both_workers(tmp_path: Path) -> None:
    a, b, clock = two_workers(
        tmp_path / "breakers", settings(failures=100, min_requests=10, failure_ratio=0.5)
    )
    for i in range(9):
        worker = (a, b)[i % 2]
        if i < 5:
            worker.record_success()
        else:
            worker.record_failure()
        clock.now += 1.5
    assert a.current_state() == State.CLOSED
    b.record_failure()  # 10 calls, 5 failed, over 15 s of the 30 s window
    assert a.current_state() == State.OPEN


def test_old_buckets_leave_the_window_and_the_record(tmp_path: Path) -> None:
    a, b, clock = two_workers(
        tmp_path / "breakers", settings(failures=100, min_requests=4, window_s=5)
    )
    for _ in range(40):  # far more seconds than the record has buckets for
        a.record_failure()
        b.record_success()
        b.record_success()
        clock.now += 1
    assert a.current_state() == State.CLOSED
    assert len(a._buckets) <= 7


def test_a_drill_in_one_worker_holds_the_breaker_of_both(tmp_path: Path) -> None:
    a, b, clock = two_workers(tmp_path / "breakers", settings())
    a.force(State.OPEN)
    clock.now += 1e6
    assert not b.allow() and b.current_state() == State.OPEN
    b.force(State.CLOSED)
    for _ in range(10):
        a.record_failure()
    assert a.allow() and b.current_state() == State.CLOSED
    a.force(None)
    for _ in range(3):
        b.record_failure()
    assert a.current_state() == State.OPEN


def test_backends_have_their_own_records(tmp_path: Path) -> None:
    s = settings()
    path = tmp_path / "breakers"
    a, _, _ = two_workers(path, s, "gemini")
    other = SharedBreaker("other", s.breaker_for("other"), BreakerTable(path, s))
    for _ in range(3):
        a.record_failure()
    assert a.current_state() == State.OPEN
    assert other.current_state() == State.CLOSED


def _hammer(path: str, s: Settings, worker: int, n: int) -> None:
    table = BreakerTable(Path(path), s)
    breaker = SharedBreaker("gemini", s.breaker_for("gemini"), table, worker=worker)
    for i in range(n):
        if worker == 0 and i % 100 == 50:
            breaker.record_failure()  # now and then a success takes the lock to reset it
        else:
            breaker.record_success()


def test_concurrent_processes_lose_no_count(tmp_path: Path) -> None:
    """Three workers at once: the successes each counts without the lock (its own ring) and
    those counted under it (after a failure), and the failures, all add up."""
    s = settings(window_s=300, failures=1000, min_requests=100_000)
    s = s.model_copy(update={"server": s.server.model_copy(update={"workers": 3})})
    path = tmp_path / "breakers"
    BreakerTable.create(path, s)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(path), s, w, 3000)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    mine = SharedBreaker("gemini", s.breaker_for("gemini"), BreakerTable(path, s), worker=0)
    assert mine.outcomes() == (9000 - 30, 30)
    assert mine.current_state() == State.CLOSED


def test_lock_free_successes_count_in_the_window(tmp_path: Path) -> None:
    """Successes counted in two workers' rings weigh against failures as the one-process
    breaker's do, leave the window as its buckets do, and start over when a probe closes it."""
    s = settings(failures=100, min_requests=10, failure_ratio=0.5, window_s=10)
    s = s.model_copy(update={"server": s.server.model_copy(update={"workers": 2})})
    path = tmp_path / "breakers"
    BreakerTable.create(path, s)
    clock = Clock()
    cfg = s.breaker_for("gemini")
    a, b = (SharedBreaker("gemini", cfg, BreakerTable(path, s), None, clock, w) for w in (0, 1))
    for _ in range(3):
        a.record_success()
        b.record_success()
    assert a.outcomes() == (6, 0)
    for _ in range(5):
        a.record_failure()
    assert b.current_state() == State.CLOSED  # 5 of 11 calls failed
    b.record_failure()  # 6 of 12: the successes count toward min_requests and the ratio
    assert a.current_state() == State.OPEN
    clock.now += cfg.cooldown_s
    assert a.allow() and not b.allow()  # a's probe
    a.record_success()
    assert b.current_state() == State.CLOSED and b.outcomes() == (0, 0)  # it starts over
    for _ in range(3):
        a.record_success()
        b.record_success()
    clock.now += 11  # they leave the window
    for _ in range(9):
        b.record_failure()
    assert a.outcomes() == (0, 9) and a.current_state() == State.CLOSED  # 9 calls < 10
    b.record_failure()
    assert a.current_state() == State.OPEN


def test_a_backends_own_window_sizes_its_record(tmp_path: Path) -> None:
    config = base_config("http://127.0.0.1:9", None)
    config["backends"]["other"] = {**config["backends"]["gemini"], "breaker": {"window_s": 120}}
    s = parse_settings(config, "test")
    path = tmp_path / "breakers"
    BreakerTable.create(path, s)
    assert BreakerTable(path, s).slots["other"][1] == 122
    slow = SharedBreaker("other", s.breaker_for("other"), BreakerTable(path, s))
    slow.record_failure()
    assert slow.current_state() == State.CLOSED
