"""Function calling in the SIMULATED Gemini (not Google's model): when it calls, what it calls
with, and the thought signatures Gemini 3 requires back.

When it calls: with ``toolConfig`` mode ANY (OpenAI surface: ``tool_choice`` required or a named
function) it always calls the first allowed function, as Gemini must. With mode AUTO it calls
only when the model name asks for it, so a test can drive an agent loop:

    <model>-tool-call       call the first declared function, then answer in text once the
                            request ends with the function responses
    <model>-tool-parallel   call every declared function at once (parallel calls), then text
    <model>-tool-chain      call one declared function per step, in order, until each has a
                            response in the current turn, then text (Google's multi-step table)

A scripted reply can also give the calls (:mod:`standby.sim.script`). Arguments are made from
each function's JSON schema (:func:`standby.sim.answers.example_for_schema`, strings get the
prompt's opening words).

Thought signatures, as Google documents them (ai.google.dev/gemini-api/docs/thought-signatures):
on ``gemini-3*`` names the first function call of each answer carries a ``thoughtSignature``
(base64), only the first for parallel calls. With ``thinkingConfig.includeThoughts`` a model
that thinks (``gemini-2.5*``, ``gemini-3*`` and later) gives a thought summary first: one part
(``thought: true``) in a whole answer, and streamed in pieces, one chunk each, before the
answer's first text or call, as Gemini's rolling summaries come. A ``gemini-3*`` request whose
current turn (since the last user message that is not function responses) has a step whose first
call lacks a signature, or carries one this simulator did not give, is refused with Gemini's
400; Google's documented placeholders (``skip_thought_signature_validator``,
``context_engineering_is_the_way_to_go``; accepted as the literal value and as the base64 of
those bytes, the form the Python SDK sends) pass. Earlier turns are not checked. Call ``id``s
are given on ``gemini-3*`` names only, so clients meet both shapes.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import replace
from functools import lru_cache
from typing import Any

import orjson

from standby.sim.answers import (
    Answer,
    SimCall,
    SimRequest,
    answer,
    count_tokens,
    example_for_schema,
    scripted_answer,
    split_chunks,
)
from standby.sim.script import Reply
from standby.sim.surface import Outcome

_BEHAVIOUR = re.compile(r"-tool-(call|parallel|chain)$")
PLACEHOLDERS = frozenset(
    {
        "skip_thought_signature_validator",
        "context_engineering_is_the_way_to_go",
        base64.b64encode(b"skip_thought_signature_validator").decode(),
        base64.b64encode(b"context_engineering_is_the_way_to_go").decode(),
    }
)
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


@lru_cache(maxsize=1024)
def traits(model: str) -> tuple[str | None, bool]:
    """The tool behaviour a model name asks for (``call`` / ``parallel`` / ``chain``) and whether
    it is a Gemini 3 name (signatures given and required)."""
    m = _BEHAVIOUR.search(model)
    return (m.group(1) if m else None), model.startswith("gemini-3")


_THINKING = re.compile(r"gemini-(2\.5|[3-9])")


def thinks(model: str) -> bool:
    """Whether a model name is of a family that thinks (and so can summarize its thoughts)."""
    return bool(_THINKING.match(model))


def is_base64(value: str) -> bool:
    """Whether a ``bytes`` field's JSON value decodes (proto3 JSON: standard or URL-safe)."""
    return bool(_BASE64.fullmatch(value)) and len(value.rstrip("=")) % 4 != 1


_SIGNED = b"standby-sim-thought-signature:"


def genuine(signature: str) -> bool:
    """Whether a signature is one this simulator gave, or one of Google's placeholders."""
    if signature in PLACEHOLDERS:
        return True
    plain = signature.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(plain + "=" * (-len(plain) % 4), validate=True)
    except ValueError:
        return False
    return raw.startswith(_SIGNED)


def corrupted_signature(position: int) -> str:
    return f"Corrupted thought signature at position {position}. (simulated Gemini)"


def missing_signature(name: str, position: int) -> str:
    """Gemini's 400 message for a current-turn call sent back without its signature."""
    return (
        "Function call is missing a thought_signature in functionCall parts. This is required "
        "for tools to work correctly, and missing thought_signature may lead to degraded model "
        f"performance. Additional data, function call `default_api:{name}` , position "
        f"{position}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures "
        "for more details. (simulated Gemini)"
    )


def signature_error(model: str, req: SimRequest) -> str | None:
    """The 400 message when ``model`` requires the signatures ``req`` lacks, else None."""
    if req.unsigned is None or not traits(model)[1]:
        return None
    return req.unsigned


def respond(
    model: str, req: SimRequest, outcome: Outcome, scripted: Answer | None
) -> Answer | None:
    """The answer both surfaces render: the scripted one, none for a failed outcome, function
    calls where the request and model name ask for them, else the usual text."""
    if scripted is not None:
        return scripted
    if outcome != "ok":
        return None
    if not req.tools and not req.include_thoughts:
        return answer(req)  # the plain-text path
    return _tooled(model, req)


@lru_cache(maxsize=2048)
def _tooled(model: str, req: SimRequest) -> Answer:
    behaviour, gemini3 = traits(model)
    chosen = _chosen(behaviour, req)
    if chosen:
        calls = _calls(req, [(n, _arguments(req, n)) for n in chosen], gemini3)
        tokens = sum(count_tokens(c.args) + 1 for c in calls)
        ans = Answer("", "STOP", tokens, calls)
    else:
        ans = answer(req)
    if req.include_thoughts and thinks(model):
        ans = replace(ans, thought=_thought(req, chosen))
    return ans


def _chosen(behaviour: str | None, req: SimRequest) -> list[str]:
    """The functions this answer calls (none: it answers in text)."""
    if not req.tools or req.tool_mode == "NONE":
        return []
    pool = list(req.allowed) or [t.name for t in req.tools]
    if req.tool_mode == "ANY":
        return pool if behaviour == "parallel" else pool[:1]
    if behaviour == "chain":
        return [n for n in pool if n not in req.answered][:1]
    if behaviour is None or req.results_last:
        return []
    return pool if behaviour == "parallel" else pool[:1]


def _arguments(req: SimRequest, name: str) -> str:
    tool = next(t for t in req.tools if t.name == name)
    schema = orjson.loads(tool.schema) if tool.schema else None
    text = " ".join(req.prompt.split()[:6]) or "simulated"
    value = example_for_schema(schema, text) if schema else {}
    return orjson.dumps(value if isinstance(value, dict) else {"value": value}).decode()


def _calls(req: SimRequest, calls: list[tuple[str, str]], gemini3: bool) -> tuple[SimCall, ...]:
    """Calls with deterministic ids; on Gemini 3 the first carries a signature."""
    out = []
    for k, (name, args) in enumerate(calls):
        seed = f"{req.prompt}|{','.join(req.answered)}|{k}|{name}|{args}".encode()
        digest = hashlib.blake2s(seed).digest()
        signature = None
        if gemini3 and k == 0:
            signature = base64.b64encode(_SIGNED + digest[:12]).decode()
        out.append(SimCall("fc-" + digest[:8].hex(), name, args, signature))
    return tuple(out)


def _thought(req: SimRequest, chosen: list[str]) -> str:
    head = " ".join(req.prompt.split()[:8])
    plan = f"calling {', '.join(chosen)}" if chosen else "answering in text"
    return f"Simulated thought about: {head}. Plan: {plan}."


def scripted_reply(reply: Reply, model: str, req: SimRequest) -> Answer:
    """A scripted reply (text or calls) as the answer to ``req`` on ``model``."""
    if not reply.calls:
        return scripted_answer(reply.text or "")
    calls = _calls(req, list(reply.calls), traits(model)[1])
    return Answer("", "STOP", sum(count_tokens(c.args) + 1 for c in calls), calls)


def native_parts(model: str, ans: Answer, stream: bool) -> list[list[dict[str, Any]]]:
    """The parts of each body: a thought summary first, the text (both in pieces when
    streamed), then each function call whole (streamed: one chunk each, as Gemini streams
    them)."""
    with_ids = traits(model)[1]
    calls = [_call_part(c, with_ids) for c in ans.calls]
    thought = [{"text": ans.thought, "thought": True}] if ans.thought else []
    has_text = bool(ans.text) or not calls
    if not stream:
        return [[*thought, *([{"text": ans.text}] if has_text else []), *calls]]
    pieces = [[{"text": piece}] for piece in split_chunks(ans.text)] if has_text else []
    thoughts = [[{"text": t, "thought": True}] for t in split_chunks(ans.thought or "", 3)]
    return [*(thoughts if thought else []), *pieces, *([c] for c in calls)]


def _call_part(call: SimCall, with_id: bool) -> dict[str, Any]:
    fc: dict[str, Any] = {"name": call.name, "args": orjson.loads(call.args)}
    if with_id:
        fc["id"] = call.id
    part: dict[str, Any] = {"functionCall": fc}
    if call.signature is not None:
        part["thoughtSignature"] = call.signature
    return part
