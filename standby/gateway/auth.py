"""Gateway keys: kept only as SHA-256 digests in memory, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

from standby.errors import AuthenticationError


class KeyRing:
    """The bearer keys clients may present. Empty = no gateway auth (local use only)."""

    def __init__(self, keys: list[SecretStr]) -> None:
        self._digests = [hashlib.sha256(k.get_secret_value().encode()).digest() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, authorization: str | None) -> str | None:
        """Validate an ``Authorization`` header; return a short key id (a digest prefix that
        is safe to log and store), or None when auth is off."""
        if not self._digests:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError(
                "Missing API key: send 'Authorization: Bearer <key>'.", code="invalid_api_key"
            )
        digest = hashlib.sha256(token.strip().encode()).digest()
        matched = False
        for known in self._digests:  # no early exit: every key is compared
            matched |= hmac.compare_digest(known, digest)
        if not matched:
            raise AuthenticationError("Incorrect API key provided.", code="invalid_api_key")
        return digest.hex()[:16]
