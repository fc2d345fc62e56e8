"""Several choices and logprobs on the OpenAI chat-completions wire, for the providers that
speak it (``openai``-type servers, litellm): ``n`` and ``logprobs`` / ``top_logprobs`` go out
under their own names (``ChatRequest.params``); what comes back is read here.

A whole answer must have a choice for each of the ``n`` asked for (``index`` 0..n-1; a server
that ignores ``n`` is a failure, not a silent single answer; so is text without the logprobs
asked for). A stream's chunks carry
``choices[].index``; the pieces of one network read become one Delta per choice. Logprobs
items are checked and given OpenAI's full shape (``bytes`` computed where a server leaves it
out, ``top_logprobs`` empty where it sends none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from standby.errors import UpstreamProtocolError
from standby.protocol import Completion, Delta, FinishReason, Usage
from standby.providers.openai_tools import StreamedCalls, finish_with_calls, merge_pieces
from standby.tool_calls import ToolCallDelta


def logprobs_items(backend: str, raw: Any) -> list[dict[str, Any]] | None:
    """A choice's ``logprobs`` (``{"content": [...]}``) as checked items; None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UpstreamProtocolError(backend, "choices[].logprobs is not an object")
    content = raw.get("content")
    if content is None:
        return None
    if not isinstance(content, list):
        raise UpstreamProtocolError(backend, "choices[].logprobs.content is not a list")
    items = []
    for entry in content:
        item = _token(backend, entry)
        top = entry.get("top_logprobs") or []
        if not isinstance(top, list):
            raise UpstreamProtocolError(backend, "a logprobs item's top_logprobs is not a list")
        item["top_logprobs"] = [_token(backend, t) for t in top]
        items.append(item)
    return items


def _token(backend: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise UpstreamProtocolError(backend, "a logprobs item is not an object")
    token, logprob = raw.get("token"), raw.get("logprob")
    if not isinstance(token, str) or isinstance(logprob, bool):
        raise UpstreamProtocolError(backend, "a logprobs item has no token")
    if not isinstance(logprob, int | float):
        raise UpstreamProtocolError(backend, "a logprobs item has no logprob")
    data = raw.get("bytes")
    if not (isinstance(data, list) and all(isinstance(b, int) for b in data)):
        data = list(token.encode())
    return {"token": token, "logprob": float(logprob), "bytes": data}


def require_logprobs(backend: str, choices: list[Completion]) -> None:
    """Text without the logprobs the request asked for: the server ignored ``logprobs``, a
    failure of this backend (the next one is tried), never an answer without them."""
    if any(c.text and c.logprobs is None for c in choices):
        raise UpstreamProtocolError(backend, "the answer has no logprobs, which were asked for")


def by_index(backend: str, choices: Any, n: int) -> list[Any]:
    """A whole answer's ``choices`` in index order, one for each of the ``n`` asked for."""
    if not isinstance(choices, list) or not choices:
        raise UpstreamProtocolError(backend, "the answer has no choices")
    ordered = sorted(choices, key=lambda c: _index(backend, c))
    if [_index(backend, c) for c in ordered] != list(range(max(n, len(ordered)))):
        raise UpstreamProtocolError(
            backend, f"asked for {n} choices, got indices {[_index(backend, c) for c in ordered]}"
        )
    return ordered[:n]


def _index(backend: str, choice: Any) -> int:
    index = choice.get("index", 0) if isinstance(choice, dict) else getattr(choice, "index", 0)
    if index is None:
        return 0
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise UpstreamProtocolError(backend, "a choice's index is not a number")
    return index


def stream_index(backend: str, choice: Any) -> int:
    """The ``index`` of a streamed choice (0 when a server leaves it out)."""
    return _index(backend, choice)


def joined(choices: list[Completion]) -> Completion:
    """Choice 0 with the others as its ``alternatives`` (their usage is counted in its)."""
    first = choices[0]
    first.alternatives = tuple(choices[1:])
    return first


class _Read:
    """What one network read said about one choice."""

    __slots__ = ("logprobs", "pieces", "texts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.pieces: list[ToolCallDelta] = []
        self.logprobs: list[dict[str, Any]] | None = None


class StreamState:
    """What a stream has said so far, per choice: its tool calls and finish reason; the usage
    and model arrive in chunks of their own (usage after the finish chunks, with
    ``stream_options.include_usage``). ``finish`` and ``usage`` read a server's finish reason
    and usage object."""

    def __init__(
        self,
        backend: str,
        n: int,
        finish: Callable[[Any], FinishReason | None],
        usage: Callable[[Any], Usage | None],
        logprobs: bool = False,
    ) -> None:
        self.backend = backend
        self.n = n
        self.logprobs = logprobs  # asked for: every piece of text must carry them
        self._finish = finish
        self._usage = usage
        self.finishes: dict[int, FinishReason] = {}
        self.usage: Usage | None = None
        self.model: str | None = None
        self.done = False
        self.calls: dict[int, StreamedCalls] = {}
        self._read: dict[int, _Read] = {}
        self._seen: set[int] = set()

    def feed(self, payload: dict[str, Any]) -> None:
        """Absorb one chunk (a dict in OpenAI's shape)."""
        try:
            self.usage = self._usage(payload.get("usage")) or self.usage
            if isinstance(model := payload.get("model"), str):
                self.model = model
            for choice in payload.get("choices") or ():
                self._choice(choice)
        except UpstreamProtocolError:
            raise
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
            raise UpstreamProtocolError(self.backend, f"unexpected chunk shape ({e!r})") from e

    def _choice(self, choice: dict[str, Any]) -> None:
        index = stream_index(self.backend, choice)
        if index >= self.n:
            raise UpstreamProtocolError(self.backend, f"a chunk of choice {index}, n is {self.n}")
        self._seen.add(index)
        if (finish := self._finish(choice.get("finish_reason"))) is not None:
            self.finishes[index] = finish
        read = self._read.setdefault(index, _Read())
        delta = choice.get("delta") or {}
        text = delta.get("content") or ""
        if not isinstance(text, str):
            raise TypeError("delta.content is not a string")
        read.texts.append(text)
        if (calls := delta.get("tool_calls")) is not None:
            streamed = self.calls.setdefault(index, StreamedCalls(self.backend))
            read.pieces += streamed.feed(calls)
        if (items := logprobs_items(self.backend, choice.get("logprobs"))) is not None:
            read.logprobs = (read.logprobs or []) + items

    def deltas(self) -> list[Delta]:
        """One Delta per choice for what was fed since the last call."""
        out = []
        for index in sorted(self._read):
            read = self._read[index]
            text = "".join(read.texts)
            if text or read.pieces or read.logprobs:
                pieces = merge_pieces(read.pieces) if read.pieces else ()
                out.append(Delta(text, tool_calls=pieces, logprobs=read.logprobs, index=index))
        if self.logprobs:
            require_logprobs(self.backend, [Completion(d.text, logprobs=d.logprobs) for d in out])
        self._read = {}
        return out

    def finished(self) -> bool:
        """Whether the server said each choice was finished (or sent ``[DONE]``)."""
        return self.done or len(self.finishes) >= self.n

    def last_deltas(self) -> list[Delta]:
        """The closing Delta of each choice, once the calls (if any) are known to be whole;
        the last carries the usage and the model."""
        missing = set(range(self.n)) - self._seen
        if missing:
            raise UpstreamProtocolError(
                self.backend, f"asked for {self.n} choices, none came for {sorted(missing)}"
            )
        out = []
        for index in range(self.n):
            calls = self.calls.get(index)
            whole = calls.finish() if calls is not None else ()
            finish = finish_with_calls(self.finishes.get(index, "stop"), bool(whole))
            out.append(Delta(finish_reason=finish, index=index))
        out[-1].usage, out[-1].model_version = self.usage, self.model
        return out
