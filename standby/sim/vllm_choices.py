"""``n`` and ``logprobs`` / ``top_logprobs`` in the SIMULATED vLLM (not a model): choice ``i``
of ``n`` is the usual reply with its words rotated by ``i`` (tool calls and JSON answers are the
same in every choice); ``logprobs: true`` adds OpenAI's ``logprobs.content`` items, one per
streamed piece of text (``standby.sim.logprobs``), with ``top_logprobs`` alternatives each."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from standby.sim.logprobs import openai_items
from standby.sim.vllm_answers import Reply


def replies(body: dict[str, Any], first: Reply) -> list[Reply]:
    """The reply of each of the ``n`` choices asked for."""
    n = body.get("n")
    count = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    return [first, *(_rotated(first, i) for i in range(1, count))]


def _rotated(reply: Reply, index: int) -> Reply:
    words = [str(d.get("content", "")).strip() for d in reply.deltas]
    if len(words) < 2 or not all(words) or reply.message.get("content") != " ".join(words):
        return reply  # calls, JSON and one-word answers: the same in every choice
    k = index % len(words)
    words = words[k:] + words[:k]
    deltas = [{"content": w if i == 0 else " " + w} for i, w in enumerate(words)]
    return replace(reply, message={**reply.message, "content": " ".join(words)}, deltas=deltas)


def _top(body: dict[str, Any]) -> int | None:
    """The alternatives per token asked for; None when logprobs were not asked for."""
    if body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs")
    return top if isinstance(top, int) and not isinstance(top, bool) else 0


def whole(body: dict[str, Any], reply: Reply, index: int) -> dict[str, Any] | None:
    """A whole answer's ``choices[index].logprobs``."""
    top = _top(body)
    if top is None:
        return None
    pieces = [d["content"] for d in reply.deltas if d.get("content")]
    return {"content": openai_items(pieces, top, 0, index), "refusal": None}


def piece(body: dict[str, Any], delta: dict[str, Any], step: int, index: int) -> Any:
    """A streamed piece's ``logprobs`` (its text is one token)."""
    top = _top(body)
    if top is None or not delta.get("content"):
        return None
    return {"content": openai_items([delta["content"]], top, step, index), "refusal": None}


def usage(body: dict[str, Any], all_replies: list[Reply]) -> dict[str, int]:
    out = all_replies[0].usage()
    done = sum(r.completion_tokens for r in all_replies)
    return {**out, "completion_tokens": done, "total_tokens": out["prompt_tokens"] + done}
