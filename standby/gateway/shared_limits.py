"""Admission caps and per-key rate limits shared by the worker processes of one port.

With ``standby serve --workers N`` (N > 1) ``server.max_concurrency``, each route's
``max_concurrency`` and ``server.rate_limit_per_key`` hold for the host, not per worker. Both
live in ``shared_table`` files of the supervisor's run directory; a call locks its record,
runs the one-process logic (:class:`Admission`, :class:`RateLimiter`) on what the record holds,
and writes it back.

Admission: one record of N slots, one per worker, each the worker's own count of requests in
flight (in all, and per route). A request is admitted when the slots' sums are under the caps,
and is counted in its worker's slot only (``enter`` takes the record's lock; ``leave`` writes
its own slot without it: a worker that reads the count before it went down refuses at worst
one request it could have taken, never admits one too many). A worker
that dies cannot leave its requests counted: the supervisor zeroes its slot before starting
the worker that replaces it. With no cap set at all nothing is refused, and each worker keeps
the one-process :class:`Admission` (no lock, nothing shared).

Rate limits: a hash table of token buckets, ``BUCKETS`` records of ``WAYS`` entries (a key id,
its tokens, the time they were counted). A key's bucket is in the record its id hashes to;
when the record is full, the entry counted longest ago makes room. An entry last counted
``burst / requests_per_s`` seconds ago or more is full anyway, so the eviction changes nothing
unless more than ``WAYS`` keys of one record are all active within that time (then one of them
starts again from a full bucket).

Outside a supervisor (``--workers 1``, a test's in-process gateway) the factories return the
one-process classes, so a single process pays nothing for this.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from standby.config import RateLimit, Settings
from standby.gateway.admission import Admission
from standby.gateway.auth import ANONYMOUS, RateLimiter
from standby.gateway.metrics import Metrics
from standby.gateway.shared_table import SharedTable
from standby.gateway.worker_env import admission_path, rate_buckets_path, run_dir, worker_index

BUCKETS = 1024
WAYS = 8
_ENTRY = struct.Struct("<16sdd")  # key id (NUL-padded), tokens, when counted (monotonic s)
_RECORD = struct.Struct("<" + "16sdd" * WAYS)
_EMPTY = bytes(16)


def create_tables(run: Path, settings: Settings) -> None:
    """The supervisor's part: the admission record (every slot zero) and empty buckets."""
    SharedTable.create(admission_path(run), _admission_size(settings))
    SharedTable.create(rate_buckets_path(run), BUCKETS * _RECORD.size)


def _routes(settings: Settings) -> list[str]:
    return sorted(settings.routes)


def _admission_size(settings: Settings) -> int:
    return settings.server.workers * (1 + len(settings.routes)) * 4


def clear_worker(run: Path, settings: Settings, index: int) -> None:
    """Forget the requests a dead worker had in flight (the supervisor, before restarting it)."""
    table = SharedTable(admission_path(run))
    try:
        slot = (1 + len(settings.routes)) * 4
        table.clear(index * slot, slot)
    finally:
        table.close()


def admission_for(settings: Settings, metrics: Metrics) -> Admission:
    """This process's admission: the host's under a supervisor, else its own (also under a
    supervisor when no cap is set: nothing is refused, so there is nothing to share)."""
    limits = {alias: route.max_concurrency for alias, route in settings.routes.items()}
    run = run_dir()
    if run is None or not (settings.server.max_concurrency or any(limits.values())):
        return Admission(settings.server.max_concurrency, limits, metrics)
    return SharedAdmission(settings, limits, metrics, SharedTable(admission_path(run)))


def limiter_for(settings: Settings) -> RateLimiter | None:
    """This process's rate limiter (None when there is no limit): the host's under a
    supervisor, else its own."""
    config = settings.server.rate_limit_per_key
    if config is None:
        return None
    run = run_dir()
    if run is None:
        return RateLimiter(config)
    return SharedRateLimiter(config, SharedTable(rate_buckets_path(run)))


class SharedAdmission(Admission):
    """:class:`Admission` over the sums of every worker's slot."""

    __slots__ = ("_all", "_col", "_mine", "_own", "_record", "_slot", "_table")

    def __init__(
        self,
        settings: Settings,
        limits: dict[str, int | None],
        metrics: Metrics,
        table: SharedTable,
    ) -> None:
        super().__init__(settings.server.max_concurrency, limits, metrics)
        cols = 1 + len(settings.routes)
        self._col = {route: 1 + i for i, route in enumerate(_routes(settings))}
        self._table = table
        self._record = settings.server.workers * cols * 4
        self._all = struct.Struct(f"<{settings.server.workers * cols}I")
        self._slot = struct.Struct(f"<{cols}I")
        self._own = worker_index() * self._slot.size
        self._mine = [0] * cols  # this worker's counts: what its slot holds

    def enter(self, route: str) -> None:
        self._table.locked(0, self._record, lambda: self._enter(route))

    def _enter(self, route: str) -> None:
        counts = self._all.unpack_from(self._table.map, 0)
        cols = len(self._mine)
        col = self._col[route]
        self.total = sum(counts[0::cols])
        self.in_flight[route] = sum(counts[col::cols])
        super().enter(route)  # Overloaded over a cap: nothing written
        self._mine[0] += 1
        self._mine[col] += 1
        self._slot.pack_into(self._table.map, self._own, *self._mine)

    def leave(self, route: str) -> None:
        """No lock: only this worker writes its slot, and a count that goes down while
        another worker reads the sums can only make that worker refuse a request it could
        have admitted at that instant, never admit one over a cap."""
        self._mine[0] -= 1
        self._mine[self._col[route]] -= 1
        self._slot.pack_into(self._table.map, self._own, *self._mine)


class SharedRateLimiter(RateLimiter):
    """:class:`RateLimiter` whose buckets are entries of the host's table."""

    __slots__ = ("table",)

    def __init__(self, config: RateLimit, table: SharedTable) -> None:
        super().__init__(config)
        self.table = table

    def take(self, key: str | None) -> None:
        name = key or ANONYMOUS
        raw = name.encode()
        offset = (zlib.crc32(raw) % BUCKETS) * _RECORD.size
        self.table.locked(offset, _RECORD.size, lambda: self._take(name, raw, offset))

    def _take(self, name: str, raw: bytes, offset: int) -> None:
        fields = _RECORD.unpack_from(self.table.map, offset)
        entries = [fields[i : i + 3] for i in range(0, len(fields), 3)]
        padded = raw[:16].ljust(16, b"\0")
        way = next((i for i, e in enumerate(entries) if e[0] == padded), None)
        if way is None:  # a new entry: an empty way, else the one counted longest ago
            way = min(range(WAYS), key=lambda i: (entries[i][0] != _EMPTY, entries[i][2]))
            self._buckets = {}
        else:
            self._buckets = {name: [entries[way][1], entries[way][2]]}
        try:
            super().take(name)  # RateLimited when the bucket is empty: its count is kept too
        finally:
            tokens, at = self._buckets[name]
            _ENTRY.pack_into(self.table.map, offset + way * _ENTRY.size, padded, tokens, at)
