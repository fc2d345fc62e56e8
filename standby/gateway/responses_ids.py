"""The ids of one Responses answer, from one random draw: the response's and its output items'.

A response id is ``resp_`` and 44 hex digits: its making time in milliseconds (12), then 128
random bits (32). The time lets a gateway process that cannot find a response tell whether it
may be one another process answered moments ago and has not written yet (``responses_state``:
the wait on a miss); a response that will not be kept (``store: false``) gets 32 random digits
only, so a miss on it is answered at once. Item ids (``msg_``, ``fc_``, ``rs_``, a ``call_`` id the
backend did not give) are the response's digits and a count: unique, never drawn again.
"""

from __future__ import annotations

import os
import time

_TIMED = 44  # hex digits of a kept response's id after ``resp_``: 12 of time, 32 random
_HEX = frozenset("0123456789abcdef")


class ResponseIds:
    """The response's id and a counter for its items' ids."""

    __slots__ = ("_base", "_count", "id")

    def __init__(self, *, kept: bool) -> None:
        random = os.urandom(16).hex()
        self._base = f"{int(time.time() * 1000):012x}{random}" if kept else random
        self.id = f"resp_{self._base}"
        self._count = 0

    def item(self, prefix: str) -> str:
        """A new item id: ``msg_...`` for a message, ``fc_...`` for a function call, ``rs_...``
        for a reasoning item."""
        self._count += 1
        return f"{prefix}_{self._base}{self._count:04x}"


def made_at(response_id: str) -> float | None:
    """When the response ``response_id`` was made (seconds since the epoch), if its id says
    (an id of a kept response); None for any other string."""
    digits = response_id.removeprefix("resp_")
    if len(digits) != _TIMED or len(response_id) != _TIMED + 5 or not _HEX.issuperset(digits):
        return None
    return int(digits[:12], 16) / 1000
