"""Storage by URL: ``open_bus``, ``open_state`` and ``open_responses`` build the backend a URL
names (``urls.py`` reads the URL). This is the one module that knows every backend; ``bus.py``,
``state.py`` and ``responses.py`` define the interfaces and know none of them.

The Redis backends are imported only when a ``redis://`` URL asks for one, so the embedded
default needs no Redis client installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from standby.errors import ConfigError
from standby.store.bus import DEFAULT_CLAIM_AFTER_S, Bus
from standby.store.responses import (
    DEFAULT_REDIS_PREFIX as RESPONSES_PREFIX,
)
from standby.store.responses import RedisResponses, ResponseStore, SQLiteResponses
from standby.store.sqlite_bus import SQLiteBus
from standby.store.state import DEFAULT_REDIS_PREFIX, RedisState, SQLiteState, StateStore
from standby.store.urls import backend_of, redis_options, safe_url, sqlite_file, url_options

if TYPE_CHECKING:
    from redis.asyncio import Redis

_SQLITE_BUS_OPTIONS = {"claim_after_s": float, "maxlen": int, "max_bytes": int}


def open_bus(url: str, *, claim_after_s: float | None = None) -> Bus:
    """The bus at ``url``: ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or
    ``redis://[:password@]host:port/db``. Options may ride in the query string
    (``?claim_after_s=30``; Redis also ``maxlen`` and ``prefix``; SQLite ``max_bytes``);
    ``claim_after_s`` given here wins over the URL's. An unknown scheme or option is a
    one-line ConfigError."""
    what = "event bus URL"
    if backend_of(url, what) == "sqlite":
        path, query = sqlite_file(url, what)
        opts, _ = url_options(url, query, _SQLITE_BUS_OPTIONS)
        return SQLiteBus(
            path,
            claim_after_s=claim_after_s or opts.get("claim_after_s", DEFAULT_CLAIM_AFTER_S),
            maxlen=int(opts.get("maxlen", 0)),
            max_bytes=int(opts.get("max_bytes", 0)),
        )
    from standby.store.redis_bus import DEFAULT_MAXLEN, DEFAULT_PREFIX, RedisBus

    opts, client_url = redis_options(url)
    return RedisBus(
        _redis_client(url, client_url, what),
        url=url,
        prefix=opts.get("prefix", DEFAULT_PREFIX),
        claim_after_s=claim_after_s or opts.get("claim_after_s", DEFAULT_CLAIM_AFTER_S),
        maxlen=int(opts.get("maxlen", DEFAULT_MAXLEN)),
    )


def open_state(url: str) -> StateStore:
    """The state store beside the bus at ``url`` (the same URL: a table in the bus's SQLite
    file, or keys next to the bus's Redis streams). The bus's options in the URL are allowed
    and, but for the Redis ``prefix`` (the state's keys sit beside the bus's), not used."""
    what = "state URL"
    if backend_of(url, what) == "sqlite":
        path, _ = sqlite_file(url, what)
        return SQLiteState(path)
    opts, client_url = redis_options(url)
    bus_prefix = opts.get("prefix")
    prefix = f"{bus_prefix}state:" if bus_prefix else DEFAULT_REDIS_PREFIX
    return RedisState(_redis_client(url, client_url, what), prefix=prefix, url=safe_url(url))


def open_responses(url: str, *, retention_s: float, max_stored: int) -> ResponseStore:
    """The stored responses beside the bus at ``url`` (the same URL: a table in the bus's
    SQLite file, or keys next to the bus's Redis streams, under the bus ``prefix`` followed by
    ``responses:`` when the URL sets one)."""
    what = "responses URL"
    if backend_of(url, what) == "sqlite":
        path, _ = sqlite_file(url, what)
        return SQLiteResponses(path, retention_s=retention_s, max_stored=max_stored)
    opts, client_url = redis_options(url)
    bus_prefix = opts.get("prefix")
    return RedisResponses(
        _redis_client(url, client_url, what),
        prefix=f"{bus_prefix}responses:" if bus_prefix else RESPONSES_PREFIX,
        url=safe_url(url),
        retention_s=retention_s,
        max_stored=max_stored,
    )


REDIS_CONNECTIONS = 100
REDIS_WAIT_S = 10.0


def _redis_client(url: str, client_url: str, what: str) -> Redis:
    """A redis-py asyncio client for ``client_url`` (``url`` without our options). Its pool
    holds up to ``REDIS_CONNECTIONS`` connections and a caller beyond them waits (up to
    ``REDIS_WAIT_S``) for one to come back: redis-py's default pool refuses the 101st at once
    ("Too many connections"), which under a burst of requests lost stored responses."""
    from redis.asyncio import BlockingConnectionPool, Redis

    try:
        pool = BlockingConnectionPool.from_url(
            client_url, max_connections=REDIS_CONNECTIONS, timeout=REDIS_WAIT_S
        )
        return Redis.from_pool(pool)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{what} {safe_url(url)!r}: {e}") from None
