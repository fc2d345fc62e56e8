"""Reading structured output: find the JSON in an answer (bare, or inside a ``` fence, or
between the first ``{`` and the last ``}``) and check it against a pydantic model or a JSON
schema. Every problem is a :class:`MalformedOutput` with a short reason that the re-ask quotes."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from standby.errors import first_problem

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
MAX_REASON = 300


class MalformedOutput(ValueError):
    """The answer is not JSON, or not JSON of the asked shape."""


def extract_json(text: str) -> Any:
    """The JSON value in ``text``; MalformedOutput when there is none."""
    stripped = text.strip()
    candidates = [stripped]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(stripped)]
    start, end = stripped.find("{"), stripped.rfind("}")
    if 0 <= start < end:
        candidates.append(stripped[start : end + 1])
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    if not stripped:
        raise MalformedOutput("the answer was empty")
    raise MalformedOutput("the answer is not valid JSON")


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with local ``$ref``s replaced by their targets and ``$defs`` dropped: the form
    every provider's structured-output subset accepts (pydantic puts nested models in $defs)."""
    defs = schema.get("$defs", {})

    def walk(node: Any, depth: int = 0) -> Any:
        if depth > 32:
            raise ValueError("schema nests too deeply (recursive $ref?)")
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")], depth + 1)
            return {k: walk(v, depth + 1) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v, depth + 1) for v in node]
        return node

    out = walk(schema)
    assert isinstance(out, dict)
    return out


def schema_of(shape: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
    """The JSON schema to send for a pydantic model or a schema dict."""
    raw = shape.model_json_schema() if isinstance(shape, type) else shape
    return inline_refs(raw)


def validate(value: Any, shape: type[BaseModel] | dict[str, Any]) -> Any:
    """``value`` as the model (or unchanged, for a schema dict) when it fits, else
    MalformedOutput naming the first problem."""
    if isinstance(shape, type):
        try:
            return shape.model_validate(value)
        except ValidationError as e:
            problem = first_problem(e)
            where = problem.loc or "the value"
            raise MalformedOutput(f"{where}: {problem.msg}"[:MAX_REASON]) from None
    import jsonschema  # type: ignore[import-untyped]

    try:
        jsonschema.validate(value, shape)
    except jsonschema.ValidationError as e:
        where = ".".join(str(p) for p in e.absolute_path) or "the value"
        raise MalformedOutput(f"{where}: {e.message}"[:MAX_REASON]) from None
    return value


def parse_output(text: str, shape: type[BaseModel] | dict[str, Any]) -> Any:
    """Extract and validate in one step."""
    return validate(extract_json(text), shape)
