"""A small file of fixed-size records shared by the worker processes of one port.

``standby serve --workers N`` (N > 1) keeps what the workers share in files of its run
directory (``worker_env``): the breakers (``shared_breakers``), the admission counts and the
rate-limit buckets (``shared_limits``). Each such file is made by the supervisor (all zero
bytes) before any worker starts and mapped by every worker. A record is changed while its byte
range is locked (an ``fcntl`` byte-range lock: one per record, so workers touching different
records do not wait for each other, and the kernel releases the lock of a process that dies
holding it). The owners may read or write a part of a record without the lock where they say
why that is safe: a byte read alone, or a part only one worker writes (``shared_breakers``,
``shared_limits``).

The locks are POSIX record locks, owned by a process: two mappings of one file in the same
process do not exclude each other (which does not matter to a worker, one event loop doing one
record operation at a time).
"""

from __future__ import annotations

import fcntl
import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class SharedTable:
    """One worker's (or the supervisor's) mapping of a table file."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR)
        try:
            self.map = mmap.mmap(self.fd, os.fstat(self.fd).st_size)
        except BaseException:
            os.close(self.fd)
            raise

    @staticmethod
    def create(path: Path, size: int) -> None:
        """The supervisor's part: a file of ``size`` zero bytes, before any worker maps it."""
        with path.open("wb") as f:
            f.truncate(max(size, 1))

    def locked(self, offset: int, size: int, op: Callable[[], T]) -> T:
        """``op()`` while the record at ``offset`` (``size`` bytes) is locked against every
        other process of the host."""
        fcntl.lockf(self.fd, fcntl.LOCK_EX, size, offset)
        try:
            return op()
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, size, offset)

    def clear(self, offset: int, size: int) -> None:
        """Zero a record (locked): what a worker that died left in it is forgotten."""

        def zero() -> None:
            self.map[offset : offset + size] = bytes(size)

        self.locked(offset, size, zero)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)
