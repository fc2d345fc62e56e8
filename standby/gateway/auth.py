"""Gateway and admin keys: kept only as SHA-256 digests in memory, compared in constant time;
reloadable without a restart; a token bucket per key.

A key is given as itself or as ``sha256:<64 hex digits>`` (its digest, so a key file or a
config need not hold the key at all). Only a digest prefix (``key_id``) is ever logged, put in a
metric label or stored with a captured answer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from pydantic import SecretStr

from standby.config import RateLimit, ServerConfig
from standby.errors import AuthenticationError, ConfigError, RateLimited

log = logging.getLogger("standby.gateway")

DIGEST_PREFIX = "sha256:"


def key_id(digest: bytes) -> str:
    """The safe-to-log id of a key: the first 16 hex digits of its SHA-256 digest."""
    return digest.hex()[:16]


def digest_of(key: str, where: str) -> bytes:
    """SHA-256 digest of a key, or the digest itself when given as ``sha256:<hex>``. Errors
    name ``where`` and never the key."""
    key = key.strip()
    if key.startswith(DIGEST_PREFIX):
        text = key[len(DIGEST_PREFIX) :].strip().lower()
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            raise ConfigError(f"{where}: a sha256: digest must be 64 hex digits")
        return bytes.fromhex(text)
    if not key:
        raise ConfigError(f"{where}: an API key is empty")
    return hashlib.sha256(key.encode()).digest()


def read_key_file(path: Path) -> list[bytes]:
    """The digests in a key file: one key or ``sha256:<hex>`` per line, ``#`` comment lines and
    blank lines ignored. Any problem is one ConfigError line (without the line's text)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: key file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read key file: {type(e).__name__}") from None
    digests = [digest_of(line, f"{path}:{number}") for number, line in key_file_lines(text)]
    if not digests:
        raise ConfigError(f"{path}: the key file holds no key")
    return digests


def key_file_lines(text: str) -> list[tuple[int, str]]:
    """The entries of a key file's text, with their line numbers: one key or ``sha256:<hex>``
    per line; ``#`` comment lines and blank lines are not entries (the one grammar of a key
    file, also read by ``gateway.secrets``)."""
    lines = ((number, line.strip()) for number, line in enumerate(text.splitlines(), 1))
    return [(number, line) for number, line in lines if line and not line.startswith("#")]


def server_digests(server: ServerConfig) -> tuple[list[bytes], list[bytes]]:
    """(gateway, admin) key digests of a server config, its key file read; a key that is both
    a gateway and an admin key is an error."""
    keys = [
        digest_of(k.get_secret_value(), f"server.api_keys[{i}]")
        for i, k in enumerate(server.api_keys)
    ]
    if server.api_keys_file is not None:
        try:
            keys += read_key_file(server.api_keys_file)
        except ConfigError as e:
            raise ConfigError(f"server.api_keys_file: {e}") from None
    admin = [
        digest_of(k.get_secret_value(), f"server.admin_keys[{i}]")
        for i, k in enumerate(server.admin_keys)
    ]
    if set(keys) & set(admin):
        raise ConfigError("server.admin_keys: an admin key is also a gateway key; use another")
    return keys, admin


class KeyRing:
    """The bearer keys a caller may present. Empty = no auth (gateway keys: local use only)."""

    def __init__(self, keys: Iterable[SecretStr | bytes] = (), *, kind: str = "API key") -> None:
        self.kind = kind
        self._digests: tuple[bytes, ...] = ()
        self.replace(
            k if isinstance(k, bytes) else digest_of(k.get_secret_value(), kind) for k in keys
        )

    def replace(self, digests: Iterable[bytes]) -> None:
        """Swap in a new set of keys at once (one assignment: no request sees half of it)."""
        self._digests = tuple(dict.fromkeys(digests))

    def __len__(self) -> int:
        return len(self._digests)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, authorization: str | None) -> str | None:
        """Validate an ``Authorization`` header; return a short key id (a digest prefix that
        is safe to log and store), or None when auth is off."""
        digests = self._digests
        if not digests:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError(
                f"Missing {self.kind}: send 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
            )
        digest = hashlib.sha256(token.strip().encode()).digest()
        matched = False
        for known in digests:  # no early exit: every key is compared
            matched |= hmac.compare_digest(known, digest)
        if not matched:
            raise AuthenticationError(f"Incorrect {self.kind} provided.", code="invalid_api_key")
        return key_id(digest)


ANONYMOUS = "anonymous"


class RateLimiter:
    """A token bucket per key id: ``requests_per_s`` refill, ``burst`` capacity. One dict
    lookup and a little arithmetic per request; buckets exist only for keys that passed auth
    (bounded by the key ring), or one shared bucket when auth is off."""

    __slots__ = ("_buckets", "burst", "rate")

    def __init__(self, config: RateLimit) -> None:
        self.rate = config.requests_per_s
        self.burst = float(config.burst)
        self._buckets: dict[str, list[float]] = {}

    def take(self, key: str | None) -> None:
        """Spend one token of ``key``'s bucket, or raise RateLimited."""
        now = time.monotonic()
        bucket = self._buckets.get(key or ANONYMOUS)
        if bucket is None:
            self._buckets[key or ANONYMOUS] = [self.burst - 1.0, now]
            return
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return
        bucket[0] = tokens
        raise RateLimited(max(1, int(-(-(1.0 - tokens) // self.rate))))
