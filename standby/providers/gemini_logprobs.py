"""Gemini's ``Candidate.logprobsResult`` in OpenAI's ``choices[].logprobs.content`` shape.

Gemini (``generationConfig.responseLogprobs: true``, ``logprobs: k``) returns per decoding
step the chosen token (``chosenCandidates[i]``: ``token``, ``tokenId``, ``logProbability``)
and the ``k`` most likely ones (``topCandidates[i].candidates``, sorted). OpenAI's item is
``{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}`` with ``bytes`` the token's
UTF-8 bytes as a list of integers. A streamed chunk's ``logprobsResult`` covers the tokens of
that chunk, so the items of a stream add up to the whole answer's.
"""

from __future__ import annotations

from typing import Any

from standby.errors import UpstreamProtocolError


def openai_logprobs(result: Any, backend: str) -> list[dict[str, Any]] | None:
    """The OpenAI items of one candidate's ``logprobsResult`` (None when it has none)."""
    if result is None:
        return None
    if not isinstance(result, dict):
        raise UpstreamProtocolError(backend, "logprobsResult is not an object")
    chosen = result.get("chosenCandidates") or []
    top = result.get("topCandidates") or []
    if not isinstance(chosen, list) or not isinstance(top, list):
        raise UpstreamProtocolError(backend, "logprobsResult candidates are not lists")
    items = []
    for step, token in enumerate(chosen):
        alternatives = top[step] if step < len(top) else None
        ranked = alternatives.get("candidates") if isinstance(alternatives, dict) else None
        item = _token(token, backend)
        item["top_logprobs"] = [_token(t, backend) for t in ranked or ()]
        items.append(item)
    return items


def _token(raw: Any, backend: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise UpstreamProtocolError(backend, "a logprobs candidate is not an object")
    token = raw.get("token", "")  # proto3 JSON leaves out empty and zero values
    logprob = raw.get("logProbability", 0.0)
    if not isinstance(token, str) or not isinstance(logprob, int | float):
        raise UpstreamProtocolError(backend, "a logprobs candidate has no token or logProbability")
    return {"token": token, "logprob": float(logprob), "bytes": list(token.encode())}
