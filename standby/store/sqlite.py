"""The one way standby opens a SQLite file: the event bus, the pipeline state, the pair store and
the judge's cache all go through ``connect``.

Every file is in WAL mode (readers never block the writer, several processes share a file) with
``synchronous=NORMAL`` (a committed transaction survives a process crash; only a power loss may
take the last commits), a busy timeout (a writer waits for another's lock instead of failing at
once), and autocommit: transactions are explicit ``BEGIN``s (``transaction``). The connection may
be used from another thread than the one that opened it, one thread at a time.

sqlite3 and OS errors propagate unchanged; each store translates them into its own error.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

log = logging.getLogger("standby.store.sqlite")

DEFAULT_BUSY_TIMEOUT_S = 10.0


def connect(
    path: Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, max_bytes: int = 0
) -> sqlite3.Connection:
    """A connection to ``path``, its directory created, set up as the module doc says.
    ``max_bytes`` > 0 caps the file's size (writes beyond fail with SQLITE_FULL). Raises
    OSError when the directory cannot be made, sqlite3.Error when the file cannot be used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":  # a file system without shared memory, say
            log.warning("sqlite %s: journal mode is %s, not wal", path, mode)
        conn.execute("PRAGMA synchronous=NORMAL")
        if max_bytes:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count={max(1, max_bytes // page)}")
    except BaseException:
        conn.close()
        raise
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    """The file's ``user_version``: the schema it was written with (0 for a new file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


@contextmanager
def transaction(
    conn: sqlite3.Connection, mode: Literal["DEFERRED", "IMMEDIATE"] = "IMMEDIATE"
) -> Iterator[sqlite3.Connection]:
    """One transaction: committed when the block ends, rolled back when it raises.
    ``IMMEDIATE`` takes the write lock at once (no deadlock between two readers that both
    decide to write); ``DEFERRED`` reads see one consistent state however long they take."""
    conn.execute(f"BEGIN {mode}")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
