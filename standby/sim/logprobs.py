"""Token log probabilities for the SIMULATORS (not a model's numbers): plausible, stable values
in the shapes each protocol uses, so that tests can check that a gateway carries them.

A token's log probability is a fixed function of the token, its step and its choice, in
(-2.5, 0]; the ``k`` alternatives at a step are the chosen token first, then common words
with the same trailing whitespace, each 0.75 less likely than the one before.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

_TOKEN = re.compile(r"^\s+|\S+\s*")
_ALTERNATIVES = ("the", "a", "answer", "simulated", "reply", "and", "of", "to", "it", "is")


def tokens(text: str) -> list[str]:
    """Words with the whitespace after them (a stream split at word starts has the same
    tokens in its pieces as the whole text)."""
    return _TOKEN.findall(text)


def logprob(token: str, step: int, choice: int) -> float:
    digest = hashlib.blake2s(f"{choice}|{step}|{token}".encode(), digest_size=4).digest()
    return -round(int.from_bytes(digest) % 2500 / 1000, 4)


def ranked(token: str, value: float, top: int) -> list[tuple[str, float]]:
    """The ``top`` most likely tokens at a step whose chosen token is ``token``."""
    stripped = token.rstrip()
    tail, lead = token[len(stripped) :], stripped[: len(stripped) - len(stripped.lstrip())]
    others = (lead + w + tail for w in _ALTERNATIVES if lead + w + tail != token)
    out = [(token, value)]
    out += [(t, round(value - 0.75 * (j + 1), 4)) for j, t in enumerate(others)]
    return out[:top]


def gemini_result(pieces: list[str], top: int | None, start: int, choice: int) -> dict[str, Any]:
    """Gemini's ``logprobsResult`` for the tokens ``pieces`` (steps ``start``...)."""
    chosen: list[dict[str, Any]] = []
    tops: list[dict[str, Any]] = []
    for step, token in enumerate(pieces, start):
        value = logprob(token, step, choice)
        chosen.append({"token": token, "logProbability": value})
        if top is not None:
            alts = [{"token": t, "logProbability": v} for t, v in ranked(token, value, top)]
            tops.append({"candidates": alts})
    result: dict[str, Any] = {"chosenCandidates": chosen}
    if top is not None:
        result["topCandidates"] = tops
    result["logProbabilitySum"] = round(sum(c["logProbability"] for c in chosen), 4)
    return result


def openai_items(pieces: list[str], top: int, start: int, choice: int) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs.content`` items for the tokens ``pieces`` (steps ``start``...)."""
    items = []
    for step, token in enumerate(pieces, start):
        value = logprob(token, step, choice)
        alts = [
            {"token": t, "logprob": v, "bytes": list(t.encode())}
            for t, v in ranked(token, value, top)
        ]
        items.append(
            {"token": token, "logprob": value, "bytes": list(token.encode()), "top_logprobs": alts}
        )
    return items
