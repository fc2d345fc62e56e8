"""Deterministic answers of the simulated Gemini server (a simulation, not Google's model).

The same request always gets the same words, on every surface (native, OpenAI-compatible),
streamed or whole, so tests can compare answers exactly. Tokens are whitespace-separated words.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import orjson

from standby.sim.judge import is_judge_schema, judgement
from standby.sim.schema_instance import instance_of

ANSWER_WORDS = 40
STREAM_CHUNKS = 8

_FILLER_TEXT = (
    "This reply comes from the standby simulator, not from Google. It is deterministic: the "
    "same prompt always gets the same words, so tests, demos, benchmarks and failover drills "
    "can compare answers exactly across both surfaces, streamed or whole, and measure what a "
    "gateway adds."
)
_FILLER = tuple(_FILLER_TEXT.split())
_CONTINUATION = (
    "and the simulated answer goes on from where the given text stopped, without repeating "
    "it, until it reaches a natural end."
)
_WORD = re.compile(r"\S+")

Finish = Literal["STOP", "MAX_TOKENS"]


def count_tokens(text: str) -> int:
    """Whitespace tokens: the simulator's only notion of a token."""
    return len(text.split())


@dataclass(frozen=True, slots=True)
class SimTool:
    """A declared function: its name and its parameters' JSON Schema as JSON text (hashable)."""

    name: str
    schema: str = ""


@dataclass(frozen=True, slots=True)
class SimCall:
    """A function call of an answer: ``args`` is compact JSON text of an object; ``signature``
    the ``thoughtSignature`` its part carries (base64), if any."""

    id: str
    name: str
    args: str = "{}"
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class SimRequest:
    """What both surfaces reduce a request to.

    ``prompt`` is the last user message; ``prefill`` the text of a trailing model / assistant
    turn to continue (``None`` when the request ends with a user turn). ``schema`` and
    ``context`` (every message's text, for scripted replies to match) take no part in hashing:
    requests are cached by body, answers by the other fields.

    Tools: ``tools`` declared, ``tool_mode`` (Gemini's AUTO / ANY / NONE / VALIDATED) and
    ``allowed`` names; ``answered`` the functions with a response in the current turn (since the
    last user message that is not a function response), ``results_last`` whether the request
    ends with function responses; ``unsigned`` names the first current-turn step whose first
    call has no thought signature (what Gemini 3 refuses)."""

    prompt: str
    prefill: str | None = None
    prompt_tokens: int = 0
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    json_mode: bool = False
    schema: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    candidates: int = 1
    context: str = field(default="", hash=False, compare=False)
    tools: tuple[SimTool, ...] = ()
    tool_mode: str = "AUTO"
    allowed: tuple[str, ...] = ()
    answered: tuple[str, ...] = ()
    results_last: bool = False
    include_thoughts: bool = False
    # Simulated thought tokens the thinking config asks for, and prompt tokens an implicit
    # cache hit covers (``gemini_config``).
    thinking: int = 0
    cached_tokens: int = 0
    # ``responseLogprobs`` asked for, and ``logprobs`` (top tokens per step; None: not given).
    logprobs: bool = False
    top_logprobs: int | None = None
    unsigned: str | None = field(default=None, hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer: its text, function ``calls`` (after the text) and ``thought`` summary."""

    text: str
    finish: Finish
    tokens: int
    calls: tuple[SimCall, ...] = ()
    thought: str | None = None


_COUNTING = re.compile(r"\s*What comes (after|before) (-?\d{1,9})\?\s*")


def counting_answer(prompt: str) -> str | None:
    """The one small domain the simulator answers for real, so that the demo's tiny model has
    something regular to learn: ``What comes after 41?`` -> ``After 41 comes 42.`` (and
    ``before``); None for any other prompt."""
    found = _COUNTING.fullmatch(prompt)
    if found is None:
        return None
    where, n = found[1], int(found[2])
    return f"{where.capitalize()} {n} comes {n + 1 if where == 'after' else n - 1}."


@lru_cache(maxsize=4096)
def base_answer(prompt: str) -> str:
    """``Simulated Gemini answer to: <first 60 chars>.`` plus filler to about 40 words (a
    counting question: its answer, :func:`counting_answer`)."""
    if (known := counting_answer(prompt)) is not None:
        return known
    head = " ".join(prompt.split())[:60].rstrip()
    text = f"Simulated Gemini answer to: {head}"
    if not text.endswith((".", "?", "!")):
        text += "."
    missing = ANSWER_WORDS - count_tokens(text)
    if missing > 0:
        filler = " ".join(_FILLER[:missing]).rstrip(",:")
        text = f"{text} {filler}" if filler.endswith(".") else f"{text} {filler}."
    return text


def example_for_schema(schema: Any, text: str) -> Any:
    """A value that satisfies a (Gemini OpenAPI-subset or JSON) schema, strings ``text``
    (``schema_instance.instance_of``)."""
    return instance_of(schema, text)


def full_answer(req: SimRequest) -> str:
    """The whole answer before stop sequences and the token limit."""
    text = base_answer(req.prompt)
    if req.json_mode:
        if is_judge_schema(req.schema):
            return orjson.dumps(judgement(req.prompt)).decode()  # scored for real: sim.judge
        value = example_for_schema(req.schema, text) if req.schema else {"answer": text}
        text = orjson.dumps(value).decode()
    return text


def answer(req: SimRequest) -> Answer:
    """The answer to ``req``: a continuation when it ends with a model turn, cut at the first
    stop sequence, then at ``max_tokens`` words (``MAX_TOKENS``)."""
    if req.schema is None:
        return _cached_answer(req.prompt, req.json_mode, req.prefill, req.max_tokens, req.stop)
    return _limit(full_answer(req), req.prefill, req.max_tokens, req.stop)


@lru_cache(maxsize=4096)
def _cached_answer(
    prompt: str, json_mode: bool, prefill: str | None, max_tokens: int | None, stop: tuple[str, ...]
) -> Answer:
    return _limit(full_answer(SimRequest(prompt, json_mode=json_mode)), prefill, max_tokens, stop)


def _limit(text: str, prefill: str | None, max_tokens: int | None, stop: tuple[str, ...]) -> Answer:
    if prefill is not None:
        text = continuation(text, prefill)
    for s in stop:
        at = text.find(s)
        if at >= 0:
            text = text[:at]
    finish: Finish = "STOP"
    tokens = count_tokens(text)
    if max_tokens is not None and tokens > max_tokens:
        text = text[: list(_WORD.finditer(text))[max_tokens - 1].end()]
        tokens = max_tokens
        finish = "MAX_TOKENS"
    return Answer(text, finish, tokens)


@lru_cache(maxsize=1024)
def scripted_answer(text: str) -> Answer:
    """A scripted reply's raw text as a finished answer (see :mod:`standby.sim.script`)."""
    return Answer(text, "STOP", count_tokens(text))


def continuation(full: str, prefill: str) -> str:
    """What follows ``prefill``: the rest of ``full`` when ``prefill`` is a prefix of it (a
    stream cut from this simulator), else a fixed sentence that does not repeat ``prefill``."""
    if full.startswith(prefill):
        return full[len(prefill) :]
    if not prefill or prefill[-1].isspace():
        return _CONTINUATION
    return " " + _CONTINUATION


@lru_cache(maxsize=4096)
def split_chunks(text: str, n: int = STREAM_CHUNKS) -> tuple[str, ...]:
    """``text`` in up to ``n`` pieces at word starts; the pieces join back to ``text``."""
    starts = [m.start() for m in _WORD.finditer(text)]
    k = min(n, len(starts))
    if k <= 1:
        return (text,)
    cuts = [0, *(starts[(i * len(starts)) // k] for i in range(1, k)), len(text)]
    return tuple(text[a:b] for a, b in itertools.pairwise(cuts))
