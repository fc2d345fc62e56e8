"""Stored responses: what ``store`` keeps, what ``previous_response_id`` continues, what
``GET`` / ``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items`` read.

A stored response is one JSON document: the response object as the client got it, and the
conversation's input up to it (the stored input of the response it continued, that response's
output items, then this request's own input items, exactly as sent). Continuing it is one read,
and deleting an earlier response of the chain does not break a later one. ``instructions`` are
not carried over (as on OpenAI): they live in the response object, not in the input.

Documents live where the operator's bus is (``responses.url``, default ``capture.bus``:
``standby.store.responses``), under the gateway key id that made them; another key's id is
the same 404 as an unknown one. A document is bounded by ``server.max_body_bytes`` (a
conversation no request could carry is not kept), and by ``responses.retention_s`` and
``max_stored``. The content is the client's own data, kept exact: not redacted, never logged,
and not captured a second time (capture sees the request once, as any other).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

import orjson

from standby.config import Settings
from standby.errors import BodyTooLargeError, RequestError
from standby.gateway.responses_ids import made_at
from standby.store import open_responses
from standby.store.errors import BusError
from standby.store.responses import Put, ResponseStore

log = logging.getLogger("standby.gateway.responses")

ANONYMOUS = ""  # the key id responses are filed under when gateway auth is off

WRITE_MARGIN_S = 2.0  # beyond write_interval_s: how long a write may wait for the file's lock
# A response finished this long after its id was made (when its request came) is written before
# it is answered: another process's wait on a miss is timed from the id, so it covers only
# answers finished within this of it (and WRITE_MARGIN_S - LATE_S is left for the write).
LATE_S = 1.0
POLL_S = 0.01  # how often a miss on a response made moments ago reads again (doubling)...
POLL_MAX_S = 0.2  # ...up to this
MAX_WAITING = 64  # misses waited on at once in a process; past it a miss is a 404 at once
MAX_PENDING = 10_000  # unwritten responses held in memory, at most...
MAX_PENDING_BYTES = 64 * 1024 * 1024  # ...and their bytes
DELETED_KEPT = 1024  # ids this process deleted lately: a miss on one is not waited on


class ResponseNotFound(RequestError):
    """No stored response of this id for this key: unknown, expired, deleted or another's."""

    status = 404

    def __init__(self, response_id: str, param: str | None = None) -> None:
        shown = response_id[:128]
        super().__init__(
            f"Response with id '{shown}' not found.", param=param, code="response_not_found"
        )


class StoreUnavailable(RequestError):
    """The store of responses cannot be read or written now (a 503, not the client's fault)."""

    status = 503
    type = "service_unavailable_error"


class Stored:
    """A stored response as read back: the response object, the conversation's input up to it
    and where its own request's input starts in that."""

    __slots__ = ("input", "own", "response", "size")

    def __init__(self, raw: bytes) -> None:
        doc = orjson.loads(raw)
        self.response: dict[str, Any] = doc["response"]
        self.input: list[dict[str, Any]] = doc["input"]
        self.own: int = doc["own"]
        self.size = len(raw)

    def history(self) -> list[dict[str, Any]]:
        """The conversation a continuation starts from: input items, then the output items."""
        return [*self.input, *self.response["output"]]

    def own_input(self) -> list[dict[str, Any]]:
        """The items of this response's own request (``input_items``) in OpenAI's list shape:
        each with an id (``msg_<response>_<n>`` when the client gave none), a call's or its
        output's status (``completed`` when the client gave none), a message's text as a part."""
        rid = self.response["id"].removeprefix("resp_")
        items = []
        for i, item in enumerate(self.input[self.own :]):
            kind = str(item.get("type", "message"))
            if "id" not in item:
                item = {"id": f"{_PREFIX.get(kind, 'msg')}_{rid}_{i}", **item}
            if kind in _STATUSED and "status" not in item:  # optional in a request, not here
                item = {**item, "status": "completed"}
            if kind == "message" and isinstance(item.get("content"), str):
                part = "output_text" if item.get("role") == "assistant" else "input_text"
                item = {
                    **item,
                    "type": "message",
                    "content": [{"type": part, "text": item["content"]}],
                }
            items.append(item)
        return items


_PREFIX = {"function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
_STATUSED = ("function_call", "function_call_output")  # items OpenAI lists with a status


class ResponseKeeper:
    """The gateway's stored responses; the store is opened on first use (a gateway that never
    sees a Responses request touches no file)."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.responses_url
        self.retention_s = settings.responses.retention_s
        self.max_stored = settings.responses.max_stored
        self.max_bytes = settings.server.max_body_bytes
        self.interval_s = settings.responses.write_interval_s
        self._store: ResponseStore | None = None
        self._pending: dict[str, Put] = {}  # answered, not yet written: by id
        self._pending_bytes = 0
        self._queue: list[Put] = []  # of those, the ones no write has taken yet
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Task[None] | None = None
        self._deleted: collections.deque[str] = collections.deque(maxlen=DELETED_KEPT)
        self._waiting = 0  # misses being waited on (``_written_soon``)

    def store(self) -> ResponseStore:
        if self._store is None:
            try:
                self._store = open_responses(
                    self.url, retention_s=self.retention_s, max_stored=self.max_stored
                )
            except BusError as e:
                raise StoreUnavailable(f"stored responses cannot be read: {e}") from None
        return self._store

    async def load(self, response_id: str, key_id: str | None, param: str | None = None) -> Stored:
        """The stored response ``response_id`` of ``key_id``, or a 404."""
        key = key_id or ANONYMOUS
        pending = self._pending.get(response_id)
        if pending is not None:
            if pending[1] != key:
                raise ResponseNotFound(response_id, param)
            return Stored(pending[2])
        try:
            raw = await self.store().get(response_id, key)
            if raw is None:
                raw = await self._written_soon(response_id, key)
        except BusError as e:
            raise StoreUnavailable(f"stored responses cannot be read: {e}") from None
        if raw is None:
            raise ResponseNotFound(response_id, param)
        return Stored(raw)

    async def _written_soon(self, response_id: str, key: str) -> bytes | None:
        """A missed response that another process may have answered moments ago and not yet
        written: read again until its writer's time is up (None: it is not there)."""
        made = made_at(response_id)
        if made is None or response_id in self._deleted or self._waiting >= MAX_WAITING:
            return None
        deadline = min(made, time.time()) + self.interval_s + WRITE_MARGIN_S
        poll = POLL_S
        self._waiting += 1
        try:
            while time.time() < deadline:
                await asyncio.sleep(poll)
                poll = min(poll * 2, POLL_MAX_S)
                pending = self._pending.get(response_id)  # this process's own, if it came since
                if pending is not None:
                    return pending[2] if pending[1] == key else None
                raw = await self.store().get(response_id, key)
                if raw is not None:
                    return raw
            return None
        finally:
            self._waiting -= 1

    async def continued(self, response_id: str, key_id: str | None, body_bytes: int) -> Stored:
        """The response ``previous_response_id`` names, if the conversation it carries and
        this request's body together are within ``server.max_body_bytes`` (413 otherwise: no
        request could carry that conversation either)."""
        previous = await self.load(response_id, key_id, "previous_response_id")
        if previous.size + body_bytes > self.max_bytes:
            raise BodyTooLargeError(
                f"previous_response_id: the conversation is over the limit of {self.max_bytes}"
                " bytes (server.max_body_bytes); start a new one",
                param="previous_response_id",
            )
        return previous

    async def keep(
        self,
        key_id: str | None,
        response: dict[str, Any],
        conversation: list[dict[str, Any]],
        own: int,
    ) -> None:
        """Store ``response`` after ``conversation`` (whose request input starts at ``own``):
        readable by this process at once, written with the next batch; one that took over
        ``LATE_S`` since its request came is written before this returns (another process
        that misses it waits only for answers made moments ago). A document over
        ``server.max_body_bytes``, or a store that fails, keeps nothing: the answer was given,
        so it is logged (the id and why, never the content), not raised."""
        doc = orjson.dumps({"response": response, "input": conversation, "own": own})
        rid = response["id"]
        if len(doc) > self.max_bytes:
            log.warning(
                "response %s not stored: %d bytes is over server.max_body_bytes", rid, len(doc)
            )
            return
        put = (rid, key_id or ANONYMOUS, doc)
        old = self._pending.get(rid)
        self._pending[rid] = put
        self._pending_bytes += len(doc) - (len(old[2]) if old is not None else 0)
        self._queue.append(put)
        made = made_at(rid)
        if made is not None and time.time() - made > LATE_S:
            await self.flush()  # past another process's wait on a miss: written before answered
        elif len(self._pending) > MAX_PENDING or self._pending_bytes > MAX_PENDING_BYTES:
            await self.flush()  # the writer is behind: this answer waits for it
        elif self._timer is None and self._writing is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._write)

    def _write(self) -> None:
        """Start writing the queue (the timer's callback)."""
        self._timer = None
        if self._writing is None and self._queue:
            self._writing = asyncio.ensure_future(self._write_batch())

    async def _write_batch(self) -> None:
        """Write what is queued as one batch; what came meanwhile waits for the next timer (a
        batch per interval at most, so a busy gateway writes large ones)."""
        batch, self._queue = self._queue, []
        try:
            await self.store().put_many(batch)
        except (BusError, StoreUnavailable) as e:
            for rid, _, _ in batch:
                log.warning("response %s not stored: %s", rid, e)
        finally:
            for put in batch:
                if self._pending.get(put[0]) is put:
                    del self._pending[put[0]]
                    self._pending_bytes -= len(put[2])
            self._writing = None
            if self._queue and self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self.interval_s, self._write)

    async def flush(self) -> None:
        """Write everything answered so far; returns once it is written (or failed)."""
        while self._queue or self._writing is not None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._writing is None:
                self._writing = asyncio.ensure_future(self._write_batch())
            await asyncio.shield(self._writing)

    async def delete(self, response_id: str, key_id: str | None) -> None:
        if response_id in self._pending:
            await self.flush()  # then it is deleted where it is written
        key = key_id or ANONYMOUS
        try:
            deleted = await self.store().delete(response_id, key)
            if not deleted and await self._written_soon(response_id, key) is not None:
                deleted = await self.store().delete(response_id, key)  # another process's
        except BusError as e:
            raise StoreUnavailable(f"stored responses cannot be written: {e}") from None
        if not deleted:
            raise ResponseNotFound(response_id)
        self._deleted.append(response_id)

    async def close(self) -> None:
        """Write what is pending, then close the store (the gateway is stopping)."""
        await self.flush()
        if self._store is not None:
            await self._store.close()
            self._store = None
