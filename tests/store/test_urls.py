"""Storage URLs: the backend a URL names, the file of a SQLite URL, options in the query string,
and passwords kept out of every message."""

from __future__ import annotations

import pytest

from standby.errors import ConfigError
from standby.store.urls import (
    backend_of,
    redis_options,
    safe_url,
    sqlite_file,
    url_options,
)


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("sqlite:///x.db", "sqlite"),
        ("SQLite:///x.db", "sqlite"),
        ("redis://127.0.0.1:6379/0", "redis"),
        ("rediss://h:6380/0", "redis"),
        ("unix:///run/redis.sock", "redis"),
    ],
)
def test_the_scheme_names_the_backend(url: str, backend: str) -> None:
    assert backend_of(url, "event bus URL") == backend


@pytest.mark.parametrize("url", ["kafka://broker:9092", "events.db", "postgres://u:secret@db/x"])
def test_other_schemes_are_one_line_errors_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        backend_of(url, "state URL")
    message = str(err.value)
    assert (
        message.startswith("state URL '") and "unsupported scheme (expected sqlite:///" in message
    )
    assert "secret" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("url", "path", "query"),
    [
        ("sqlite:///./.standby/events.db", "./.standby/events.db", ""),
        ("sqlite:///rel/x.db", "rel/x.db", ""),
        ("sqlite:////abs/x.db", "/abs/x.db", ""),
        ("sqlite:///my%20dir/x.db?maxlen=5", "my dir/x.db", "maxlen=5"),
    ],
)
def test_sqlite_urls_name_a_relative_or_absolute_file(url: str, path: str, query: str) -> None:
    assert sqlite_file(url, "event bus URL") == (path, query)


@pytest.mark.parametrize(
    "url", ["sqlite://events.db", "sqlite:///", "sqlite:x.db", "redis://h/0", "pairs.db"]
)
def test_other_sqlite_forms_are_refused(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        sqlite_file(url, "data.store")
    assert str(err.value) == (
        f"data.store {url!r}: expected sqlite:///relative/path.db or sqlite:////absolute/path.db"
    )


def test_options_are_typed_and_checked() -> None:
    allowed = {"claim_after_s": float, "maxlen": int, "prefix": str}
    options, rest = url_options("u", "claim_after_s=2.5&maxlen=0&prefix=a:", allowed)
    assert (options, rest) == ({"claim_after_s": 2.5, "maxlen": 0, "prefix": "a:"}, "")
    options, rest = url_options("u", "maxlen=3&socket_timeout=9", allowed, strict=False)
    assert (options, rest) == ({"maxlen": 3}, "socket_timeout=9")
    for query, message in [
        ("maxlen=-1", "maxlen must be a positive number"),
        ("maxlen=many", "maxlen must be a positive number"),
        ("claim_after_s=0", "claim_after_s must be a positive number"),
        ("claim_after_s=inf", "claim_after_s must be a positive number"),
        ("colour=red", "unknown option 'colour' (claim_after_s, maxlen, prefix)"),
    ]:
        with pytest.raises(ConfigError) as err:
            url_options("redis://:pw@h/0", query, allowed, what="state URL")
        assert str(err.value) == f"state URL 'redis://:***@h/0': {message}"


def test_redis_options_leave_the_rest_to_redis_py() -> None:
    options, client_url = redis_options(
        "redis://:pw@h:1/2?prefix=app:&maxlen=0&socket_timeout=9&claim_after_s=3"
    )
    assert options == {"prefix": "app:", "maxlen": 0, "claim_after_s": 3.0}
    assert client_url == "redis://:pw@h:1/2?socket_timeout=9"


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://user:pw@[::1]:6379/0", "redis://user:***@[::1]:6379/0"),
        ("rediss://u:p%40ss@h/0", "rediss://u:***@h/0"),
        ("redis://h:1/0?password=pw&db=2", "redis://h:1/0?password=***&db=2"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("redis://:pw@h:99999999/0", "<unparseable bus URL>"),
    ],
)
def test_passwords_are_masked(url: str, safe: str) -> None:
    assert safe_url(url) == safe
