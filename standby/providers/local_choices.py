"""``n`` > 1 on the local backend: each choice is its own job (a row of a batch; the worker
batches rows of the same sampling settings together), and here the answers become one.

A whole answer is choice 0 with choices 1..n-1 as ``Completion.alternatives``; its usage counts
the prompt once and the tokens of every choice (as OpenAI's does). A stream interleaves the
choices' deltas as they come, each with its ``Delta.index``; each choice's last delta has its
``finish_reason``, and the last of them all carries the usage of the whole request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence

from standby.protocol import Completion, Delta, Usage


def total_usage(usages: list[Usage]) -> Usage:
    """One request's usage over its choices: the prompt once, every choice's tokens."""
    return Usage(
        prompt_tokens=max((u.prompt_tokens for u in usages), default=0),
        completion_tokens=sum(u.completion_tokens for u in usages),
    )


async def complete_choices(answers: list[Awaitable[Completion]]) -> Completion:
    """The choices as one Completion; the first failure cancels the others and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_awaited(a)) for a in answers]
    except* Exception as failed:  # the first failure as itself, not as a group
        raise failed.exceptions[0] from None
    first, *rest = (t.result() for t in tasks)
    first.usage = total_usage([first.usage, *(c.usage for c in rest)])
    first.alternatives = tuple(rest)
    return first


async def _awaited(answer: Awaitable[Completion]) -> Completion:
    return await answer


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
