"""Circuit breaker state machine, on a controlled clock."""

from __future__ import annotations

from standby.config import BreakerConfig
from standby.gateway.breaker import CircuitBreaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kw: float) -> tuple[CircuitBreaker, Clock, list[tuple[State, State]]]:
    clock = Clock()
    changes: list[tuple[State, State]] = []
    cfg = BreakerConfig(**kw)  # type: ignore[arg-type]
    breaker = CircuitBreaker("b", cfg, lambda _, a, b: changes.append((a, b)), clock)
    return breaker, clock, changes


def test_opens_after_consecutive_failures_and_recovers_through_one_probe() -> None:
    b, clock, changes = make(failures=3, cooldown_s=10)
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert b.state == State.CLOSED
    b.record_success()  # resets the consecutive count
    for _ in range(3):
        b.record_failure()
    assert b.state == State.OPEN and not b.allow()
    clock.now += 9.9
    assert not b.allow()
    clock.now += 0.2
    assert b.allow()  # the single probe
    assert b.state == State.HALF_OPEN
    assert not b.allow()  # everyone else skips while the probe is out
    b.record_success()
    assert b.state == State.CLOSED and b.allow()
    assert changes == [
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.CLOSED),
    ]


def test_failed_probe_reopens() -> None:
    b, clock, _ = make(failures=1, cooldown_s=5)
    b.record_failure()
    clock.now += 5
    assert b.allow()
    b.record_failure()
    assert b.state == State.OPEN
    assert b.seconds_until_retry() == 5


def test_retry_after_extends_the_cooldown_up_to_the_cap() -> None:
    b, _, _ = make(failures=1, cooldown_s=5, max_cooldown_s=60)
    b.record_failure(retry_after=30)
    assert b.seconds_until_retry() == 30
    b2, _, _ = make(failures=1, cooldown_s=5, max_cooldown_s=60)
    b2.record_failure(retry_after=3600)
    assert b2.seconds_until_retry() == 60


def test_failure_ratio_over_the_window_opens() -> None:
    b, clock, _ = make(failures=100, failure_ratio=0.5, min_requests=10, window_s=30)
    for i in range(20):
        clock.now += 0.5
        if i % 2:
            b.record_failure()
        else:
            b.record_success()
        if b.state == State.OPEN:
            break
    assert b.state == State.OPEN


def test_old_failures_leave_the_window() -> None:
    b, clock, _ = make(failures=100, failure_ratio=0.5, min_requests=4, window_s=10)
    b.record_failure()
    b.record_failure()
    clock.now += 30
    for _ in range(3):
        b.record_success()
    b.record_failure()
    assert b.state == State.CLOSED


def test_released_probe_lets_the_next_request_probe() -> None:
    b, clock, _ = make(failures=1, cooldown_s=1)
    b.record_failure()
    clock.now += 1
    assert b.allow()
    b.release()  # e.g. the probe got a client error: no verdict
    assert b.state == State.HALF_OPEN
    assert b.allow()
