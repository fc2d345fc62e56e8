"""The fault-spec parser of the simulated Gemini: a pure function."""

from __future__ import annotations

import pytest

from standby.sim.faults import ERROR_STATUSES, OK, Fault, parse_fault


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ok", OK),
        ("hang", Fault("hang", "hang")),
        ("reset", Fault("reset", "reset")),
        ("safety", Fault("safety", "safety")),
        ("blocked", Fault("blocked", "blocked")),
        ("recitation", Fault("recitation", "recitation")),
        ("malformed", Fault("malformed", "malformed")),
        ("malformed-call", Fault("malformed-call", "malformed_call")),
        ("error-503", Fault("error-503", "error", 503)),
        ("error-429", Fault("error-429", "error", 429, retry_after=1)),
        ("error-429-retry-30", Fault("error-429-retry-30", "error", 429, retry_after=30)),
        ("slow-250", Fault("slow-250", "slow", 250)),
        ("idle-40", Fault("idle-40", "idle", 40)),
        ("cut-0", Fault("cut-0", "cut", 0)),
        ("cut-3", Fault("cut-3", "cut", 3)),
        ("flaky-2", Fault("flaky-2", "flaky", 2)),
    ],
)
def test_specs_parse(spec: str, expected: Fault) -> None:
    assert parse_fault(spec) == expected


@pytest.mark.parametrize("status", sorted(ERROR_STATUSES))
def test_every_listed_error_status_parses(status: int) -> None:
    fault = parse_fault(f"error-{status}")
    assert fault is not None
    assert (fault.kind, fault.value) == ("error", status)


@pytest.mark.parametrize(
    "spec",
    [
        "gemini-2.5-flash",  # an ordinary model name
        "",
        "OK",
        "error-418",  # not a status the simulator serves
        "error-501",
        "error-200",
        "error-503-retry-5",  # only 429 carries a retry hint
        "error-429-retry-",
        "slow",
        "slow-",
        "slow--5",
        "slow-1.5",
        "slow-99999999",  # longer than an hour
        "cut-x",
        "hang-5",
        "flaky",
        "wobble-3",
        " ok",
        "reset ",
    ],
)
def test_non_specs_are_none(spec: str) -> None:
    assert parse_fault(spec) is None
