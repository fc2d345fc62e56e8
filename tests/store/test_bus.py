"""open_bus: backend by URL, options in the query string, one-line errors without secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from standby.errors import ConfigError
from standby.store import open_bus
from standby.store.bus import check_name
from standby.store.redis_bus import DEFAULT_MAXLEN, DEFAULT_PREFIX, RedisBus
from standby.store.sqlite_bus import SQLiteBus
from standby.store.urls import safe_url


async def test_sqlite_urls_relative_and_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rel = open_bus("sqlite:///./.standby/events.db")  # the config default
    absolute = open_bus(f"sqlite:///{tmp_path}/abs/events.db?claim_after_s=5&maxlen=10")
    assert isinstance(rel, SQLiteBus) and isinstance(absolute, SQLiteBus)
    assert rel.path == Path(".standby/events.db") and (tmp_path / ".standby/events.db").exists()
    assert absolute.path == tmp_path / "abs" / "events.db" and absolute.path.is_absolute()
    assert (absolute.claim_after_s, absolute.maxlen) == (5.0, 10)
    assert open_bus(f"sqlite:///{tmp_path}/x.db", claim_after_s=2).claim_after_s == 2
    for bus in (rel, absolute):
        await bus.close()


async def test_redis_url_options() -> None:
    bus = open_bus("redis://:pw@127.0.0.1:6379/3?prefix=app:&maxlen=0&socket_timeout=9")
    assert isinstance(bus, RedisBus)
    assert (bus.prefix, bus.maxlen, bus.url) == (
        "app:",
        0,
        "redis://:***@127.0.0.1:6379/3?prefix=app:&maxlen=0&socket_timeout=9",
    )
    default = open_bus("redis://127.0.0.1:6379/0")
    assert isinstance(default, RedisBus)
    assert (default.prefix, default.maxlen) == (DEFAULT_PREFIX, DEFAULT_MAXLEN)
    await bus.close()
    await default.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("kafka://broker:9092", "event bus URL 'kafka://broker:9092': unsupported scheme"),
        ("events.db", "event bus URL 'events.db': unsupported scheme"),
        ("postgres://u:secret@db/x", "event bus URL 'postgres://u:***@db/x': unsupported scheme"),
        ("sqlite://events.db", "expected sqlite:///relative/path.db or sqlite:////absolute"),
        ("sqlite:///", "expected sqlite:///relative/path.db"),
        ("sqlite:///e.db?maxlen=-1", "maxlen must be a positive number"),
        ("sqlite:///e.db?claim_after_s=0", "claim_after_s must be a positive number"),
        ("sqlite:///e.db?colour=red", "unknown option 'colour' (claim_after_s, max_bytes, maxlen)"),
        ("redis://h:1/0?claim_after_s=soon", "claim_after_s must be a positive number"),
    ],
)
def test_bad_urls_are_one_line_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_bus(url)
    assert message in str(err.value)
    assert "\n" not in str(err.value) and "secret" not in str(err.value)


def test_safe_url_and_names() -> None:
    assert safe_url("redis://user:pw@[::1]:6379/0") == "redis://user:***@[::1]:6379/0"
    assert safe_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert safe_url("redis://h:1/0?password=pw&db=2") == "redis://h:1/0?password=***&db=2"
    assert check_name("topic", "inference.completed") == "inference.completed"
    for bad in ("", "-x", "a b", "a:b", "x" * 201):
        with pytest.raises(ValueError):
            check_name("topic", bad)
