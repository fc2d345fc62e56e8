"""Storage URLs, read in one place: which backend a URL names, the file of a SQLite URL, our
options in the query string, and the URL without its password for messages and logs.

    sqlite:///relative/path.db     sqlite:////absolute/path.db     (file path percent-decoded)
    redis://[user:password@]host:port/db     rediss://...     unix:///path/to/redis.sock

The same URL serves the event bus and the pipeline state beside it. Every problem is a one-line
ConfigError that names the setting (``event bus URL``, ``state URL``, ``data.store``) and the
URL with its password replaced by ``***``.
"""

from __future__ import annotations

from typing import Any, Final, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from standby.errors import ConfigError

Backend = Literal["sqlite", "redis"]
_BACKENDS: Final[dict[str, Backend]] = {
    "sqlite": "sqlite",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
}
SQLITE_FORMS: Final = "sqlite:///relative/path.db or sqlite:////absolute/path.db"
# Our options in a Redis URL's query string; the rest (socket_timeout=...) is redis-py's.
REDIS_OPTIONS: Final[dict[str, type]] = {"claim_after_s": float, "maxlen": int, "prefix": str}


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs (a URL without one
    as given: rebuilding ``sqlite:///x.db`` would lose a slash)."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if parts.password is None and all(k != "password" for k, _ in query):
            return url
        if parts.password is not None:
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            port = f":{parts.port}" if parts.port else ""
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}{port}")
        if any(k == "password" for k, _ in query):
            hidden = [(k, "***" if k == "password" else v) for k, v in query]
            parts = parts._replace(query=urlencode(hidden, safe=":*"))
        return urlunsplit(parts)
    except ValueError:
        return "<unparseable bus URL>"


def backend_of(url: str, what: str) -> Backend:
    """``sqlite`` or ``redis``, by the URL's scheme; ConfigError for any other."""
    scheme = url.partition(":")[0].lower() if ":" in url else ""
    backend = _BACKENDS.get(scheme)
    if backend is None:
        raise ConfigError(
            f"{what} {safe_url(url)!r}: unsupported scheme "
            "(expected sqlite:///path/to/events.db or redis://host:port/0)"
        )
    return backend


def sqlite_file(url: str, what: str) -> tuple[str, str]:
    """The file a ``sqlite:///`` URL names, as written (three slashes then a relative path, four
    then an absolute one), and the URL's query string; ConfigError for any other form."""
    parts = urlsplit(url)
    path = parts.path
    if parts.scheme != "sqlite" or parts.netloc or len(path) < 2 or not path.startswith("/"):
        raise ConfigError(f"{what} {url!r}: expected {SQLITE_FORMS}")
    return unquote(path[1:]), parts.query


def url_options(
    url: str,
    query: str,
    allowed: dict[str, type],
    *,
    strict: bool = True,
    what: str = "event bus URL",
) -> tuple[dict[str, Any], str]:
    """Our options from a URL's query string (floats > 0, ints >= 0, strings), and the rest
    of the query (which must be empty when ``strict``). A bad value is a one-line ConfigError."""
    options: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        kind = allowed.get(name)
        if kind is None:
            if strict:
                known = ", ".join(sorted(allowed))
                raise ConfigError(f"{what} {safe_url(url)!r}: unknown option {name!r} ({known})")
            rest.append((name, value))
            continue
        if kind is str:
            options[name] = value
            continue
        try:
            number: float = kind(value)
        except ValueError:
            number = -1
        if number < 0 or (kind is float and not 0 < number < float("inf")):
            raise ConfigError(f"{what} {safe_url(url)!r}: {name} must be a positive number")
        options[name] = number
    return options, urlencode(rest)


def redis_options(url: str) -> tuple[dict[str, Any], str]:
    """Our options (``REDIS_OPTIONS``) from a Redis URL, and the URL for redis-py without them."""
    parts = urlsplit(url)
    options, rest = url_options(url, parts.query, REDIS_OPTIONS, strict=False)
    return options, urlunsplit(parts._replace(query=rest))
