"""One pipeline run at a time, however many workers: a lease in the state store, held by one
worker and renewed while it works; a worker that dies stops renewing and, ``ttl_s`` later,
another one takes over (and resumes the run where it stopped)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

from standby.store.state import StateStore

log = logging.getLogger("standby.pipeline")

KEY = "pipeline:lease"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LeaseLost(Exception):
    """Another worker holds the lease now: stop working on the run."""


class Lease:
    def __init__(self, state: StateStore, holder: str, ttl_s: float) -> None:
        self.state = state
        self.holder = holder
        self.ttl_s = ttl_s
        self._renewer: asyncio.Task[None] | None = None
        self.lost = asyncio.Event()
        self.other: dict[str, Any] | None = None  # the lease another worker held at acquire()

    def held_by_other(self) -> str:
        """Who held the lease when ``acquire()`` failed, and for how long still."""
        doc = self.other or {}
        left = max(0.0, float(doc.get("expires_at", 0)) - time.time())
        return f"worker {doc.get('holder', '?')} holds the lease (expires in {left:.0f}s)"

    async def acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours."""
        now = time.time()

        def take(doc: dict[str, Any] | None) -> dict[str, Any]:
            if doc and doc["holder"] != self.holder and doc["expires_at"] > now:
                return doc
            return {"holder": self.holder, "expires_at": now + self.ttl_s, "since": now}

        doc = await self.state.update(KEY, take)
        self.other = None if doc["holder"] == self.holder else doc
        return self.other is None

    async def renew(self) -> None:
        now = time.time()

        def extend(doc: dict[str, Any] | None) -> dict[str, Any] | None:
            if not doc or doc["holder"] != self.holder:
                raise LeaseLost(f"lease held by {doc['holder'] if doc else 'nobody'}")
            return {**doc, "expires_at": now + self.ttl_s}

        await self.state.update(KEY, extend)

    async def release(self) -> None:
        def drop(doc: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if doc and doc["holder"] == self.holder else doc

        with contextlib.suppress(Exception):
            await self.state.update(KEY, drop)

    def keep_renewed(self) -> None:
        """Renew every third of the TTL in the background; ``lost`` is set if that fails."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.ttl_s / 3)
                try:
                    await self.renew()
                except LeaseLost as e:
                    log.error("pipeline: %s; stopping this worker's run", e)
                    self.lost.set()
                    return
                except Exception as e:  # the store is down: keep trying until the TTL
                    log.warning("pipeline: cannot renew the lease: %s", e)

        self._renewer = asyncio.create_task(loop(), name="lease-renewer")

    async def stop_renewing(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
