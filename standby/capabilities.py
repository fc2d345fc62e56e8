"""What a request needs of a backend, and whether a backend has it.

A request that uses tools, sends images, asks for a JSON schema, logprobs, several choices or a
logit bias can only be answered by a backend that honours it: answering without it would drop
the client's ask silently. Each provider declares what it ``supports`` (from its config and
model); ``missing`` says, in a few words for the client, what it lacks. Failover skips such a
backend without calling it (failover reason ``unsupported``) and answers 400 when no backend of
the route can serve the request.

Parameters that only tune an answer (temperature, penalties, reasoning effort, seed, service
tier) are not needs: each backend applies what it can, as the README's parameter table says.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from standby.protocol import ChatRequest

Need = Literal[
    "tools",
    "image",
    "audio",
    "file",
    "structured_output",
    "logprobs",
    "choices",
    "logit_bias",
]

# How a need is said in an error: "the request needs <...>".
WORDS: dict[Need, str] = {
    "tools": "tools",
    "image": "image input",
    "audio": "audio input",
    "file": "file (PDF) input",
    "structured_output": "structured output (response_format)",
    "logprobs": "logprobs",
    "choices": "several choices (n > 1)",
    "logit_bias": "logit_bias",
}
ALL: frozenset[Need] = frozenset(WORDS)
# The request field that asks for each need (an error's ``param``).
FIELDS: dict[Need, str] = {
    "tools": "tools",
    "image": "messages",
    "audio": "messages",
    "file": "messages",
    "structured_output": "response_format",
    "logprobs": "logprobs",
    "choices": "n",
    "logit_bias": "logit_bias",
}


MEDIA_NEEDS: tuple[Need, ...] = ("image", "audio", "file")


def media_needs(modalities: Iterable[str]) -> frozenset[Need]:
    """The media needs a backend configured with ``modalities`` (``[text, image]``) meets."""
    listed = set(modalities)
    return frozenset(n for n in MEDIA_NEEDS if n in listed)


def needs_of(request: ChatRequest) -> frozenset[Need]:
    found: set[Need] = set()
    if request.uses_tools:
        found.add("tools")
    for media in request.media:
        found.add(media.kind)
    if request.response_format is not None:
        found.add("structured_output")
    if request.logprobs:
        found.add("logprobs")
    if request.n > 1:
        found.add("choices")
    if request.logit_bias:
        found.add("logit_bias")
    return frozenset(found)


def missing(request: ChatRequest, supports: Set[Need], backend: str = "this backend") -> str | None:
    """What ``request`` needs that a backend supporting ``supports`` lacks, in words (None:
    nothing)."""
    lacking = request.needs() - supports
    if not lacking:
        return None
    said = ", ".join(WORDS[n] for n in sorted(lacking))
    return f"{backend} does not support {said}"
