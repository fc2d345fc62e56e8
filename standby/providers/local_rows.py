"""One generation batch's rows: a request's ``Job``, its ``RowDecoder`` (token ids to text
deltas) and ``Rows``, the ``StoppingCriteria`` that feeds every row its tokens and stops each on
its own (end of turn, stop string, token limit, cancellation).

Plain requests decode as a chat client expects (special tokens dropped). Requests with tools
keep the special tokens (Gemma 4's ``<|tool_call>`` and ``<|"|>`` are special tokens) for the
provider to read calls from (``local_tools.ToolStream``), and also stop where the model waits
for a tool's result.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria

from standby.errors import UpstreamError
from standby.protocol import ChatRequest, Delta, FinishReason, Usage
from standby.providers.local_controls import Controls, RowControls

Item = Delta | UpstreamError


class Job:
    """One request on its way through the worker; ``out`` receives Deltas, then maybe an error."""

    def __init__(self, request: ChatRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.loop = loop
        self.out: asyncio.Queue[Item] = asyncio.Queue()
        self.cancelled = False
        self.finished = False
        self.prompt_len = 0
        self.adapter: str | None = None  # set by GenerationWorker.submit
        self.tools = request.uses_tools  # decoded raw, for local_tools.ToolStream
        self.controls: RowControls | None = None  # set when its batch is prepared

    def send(self, item: Item) -> None:
        if self.cancelled:
            return
        if isinstance(item, UpstreamError) or item.finish_reason is not None:
            self.finished = True
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the consumer's event loop is closed: nobody is listening
            self.cancelled = True

    @property
    def sampling(self) -> tuple[float | None, float | None, int | None]:
        """Requests batch together only when these are equal."""
        r = self.request
        return (r.temperature, r.top_p, r.seed)


class RowDecoder:
    """Turns one row's new token ids into text deltas.

    Each step decodes the row's whole output (exact for every tokenizer, cheap at these
    lengths) and emits what is new, holding back a trailing U+FFFD (a multi-byte character
    whose remaining bytes are still to come) and any tail that may be the start of a stop string.
    ``skip_special=False`` keeps special tokens in the text (tool calls are read from them).
    """

    def __init__(
        self,
        tokenizer: Any,
        stop: tuple[str, ...],
        eos: frozenset[int],
        limit: int,
        *,
        skip_special: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self.stop = tuple(s for s in stop if s)
        self.eos = eos
        self.limit = limit
        self.ids: list[int] = []
        self.tokens = 0
        self.emitted = 0
        self.finish: FinishReason | None = None

    def push(self, token: int) -> str:
        """Take one generated token; returns the text to emit now (maybe empty)."""
        self.tokens += 1
        if token in self.eos:
            self.finish = "stop"
            return self._advance(final=True)
        self.ids.append(token)
        final = self.tokens >= self.limit
        text = self._advance(final=final)
        if final and self.finish is None:
            self.finish = "length"
        return text

    def flush(self) -> str:
        """All text not emitted yet (the row ended for a reason the decoder did not see)."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        full = self.tokenizer.decode(
            self.ids, skip_special_tokens=self.skip_special, clean_up_tokenization_spaces=False
        )
        text: str = full if final else full.rstrip("\ufffd")
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.finish = "stop"
            end = cut
        elif final:
            end = len(text)
        else:
            end = len(text) - self._stop_prefix_len(text)
        delta = text[self.emitted : end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return delta

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest tail of ``text`` that could begin a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best


class Rows(StoppingCriteria):
    """Called by ``generate()`` after every step: feeds each row its token, says which stop.

    A row that asked for logprobs gets each token's (from ``controls``) with the delta that
    carries the token's text, or with the last one."""

    def __init__(
        self,
        jobs: list[Job],
        decoders: list[RowDecoder],
        stats: WorkerStats,
        controls: Controls | None = None,
    ):
        self.jobs = jobs
        self.decoders = decoders
        self.stats = stats
        self.controls = controls
        self.done = [False] * len(jobs)
        self.closing = False
        self.pending: list[list[dict[str, Any]]] = [[] for _ in jobs]

    def logprobs(self, row: int) -> list[dict[str, Any]] | None:
        """The logprobs of ``row``'s tokens not sent yet (None: it asked for none)."""
        if self.controls is None or self.controls.rows[row].top_logprobs is None:
            return None
        items, self.pending[row] = self.pending[row], []
        return items

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        last = input_ids[:, -1].tolist()
        for i, (job, dec) in enumerate(zip(self.jobs, self.decoders, strict=True)):
            if self.done[i]:
                continue
            if job.cancelled or self.closing:
                self.done[i] = True
                self.stats.cancelled += 1
                continue
            token = last[i]
            text = dec.push(token)
            self.stats.generated_tokens += 1
            if self.controls is not None and token not in dec.eos:
                item = self.controls.item(i, token)
                if item is not None:
                    self.pending[i].append(item)
            if dec.finish is not None:
                self.done[i] = True
                usage = Usage(prompt_tokens=job.prompt_len, completion_tokens=dec.tokens)
                end = Delta(text=text, finish_reason=dec.finish, usage=usage)
                end.logprobs = self.logprobs(i)
                job.send(end)
            elif text:
                job.send(Delta(text=text, logprobs=self.logprobs(i)))
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


@dataclass(slots=True)
class WorkerStats:
    """Counters for metrics and tests: batch sizes (how well batching works), tokens, cancels."""

    batches: int = 0
    batch_sizes: collections.Counter[int] = field(default_factory=collections.Counter)
    generated_tokens: int = 0
    cancelled: int = 0
    swaps: int = 0
