"""Pipeline fixtures: the state store and registry on the same two storages as the bus (a
SQLite file, the real Redis under a per-test key prefix), from tests/store/conftest.py."""

from __future__ import annotations

from tests.store.conftest import backend, redis_backend, registry, state

__all__ = ["backend", "redis_backend", "registry", "state"]
