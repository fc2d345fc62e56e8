"""``n`` > 1 on the local backend: each choice is its own job (a row of a batch; the worker
batches rows of the same sampling settings together), and here their streams become one.

The stream interleaves the choices' deltas as they come, each with its ``Delta.index``; each
choice's last delta has its ``finish_reason``, and the last of them all carries the usage of the
whole request: the prompt once and the tokens of every choice (as OpenAI's does). A whole answer
is that stream added up (``protocol.Assembly``): choice 0 with choices 1..n-1 as
``Completion.alternatives``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

from standby.protocol import Delta, Usage


def total_usage(usages: list[Usage]) -> Usage:
    """One request's usage over its choices: the prompt once, every choice's tokens."""
    return Usage(
        prompt_tokens=max((u.prompt_tokens for u in usages), default=0),
        completion_tokens=sum(u.completion_tokens for u in usages),
    )


async def stream_choices(streams: Sequence[AsyncIterator[Delta]]) -> AsyncGenerator[Delta, None]:
    """The choices' deltas as they come, ``index`` set; usage on the very last one only."""
    queue: asyncio.Queue[tuple[int, Delta | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[Delta]) -> None:
        try:
            async for delta in stream:
                await queue.put((index, delta))
            await queue.put((index, None))
        except Exception as e:  # handed to the consumer, which raises it
            await queue.put((index, e))
        finally:
            if isinstance(stream, AsyncGenerator):
                await stream.aclose()

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    usages: list[Usage] = []
    running = len(tasks)
    try:
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            item.index = index
            if item.finish_reason is not None:
                usages.append(item.usage or Usage())
                item.usage = total_usage(usages) if len(usages) == len(tasks) else None
            yield item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
