"""Garbage-collector settings for long-running server processes: the gateway and its capture
writer."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Tune the cyclic garbage collector for a long-running server process.

    - Freeze everything built at start-up (modules, schemas, clients, a loaded model): it lives
      as long as the process, and without this every full (generation 2) pass walks all of it
      with the event loop stopped.
    - Collect the youngest generation after 20,000 net allocations instead of 700: one request
      allocates hundreds of objects and frees nearly all of them by reference counting, so at
      700 a pass ran every few requests and found little.

    What it saves is measured in docs/benchmarks.md (the capture section, "Session 2"). Only for a
    long-running process (``standby serve``, the capture writer): what is frozen is never
    collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)
