"""SIMULATION: one deterministic value that satisfies a JSON Schema (or Gemini's OpenAPI subset,
whose type names are upper case), for the simulators' structured answers and tool arguments.

Written here rather than taken from a library: the generators on PyPI (hypothesis-jsonschema,
jsf) draw random values, hypothesis-jsonschema takes tens to hundreds of milliseconds per
schema and brings Hypothesis into the served package, and jsf brings Faker; a simulator needs
the same small answer every time. What is covered is what Pydantic models and OpenAI's strict
schemas use: ``$ref``/``$defs``, ``anyOf``/``oneOf`` (the first non-null option), ``allOf``
(merged), ``enum``, ``const``, every property of an object, ``prefixItems`` and
``minItems``/``maxItems``, string ``minLength``/``maxLength`` and the common ``format``s
(date-time, date, time, duration, email, uri, uuid, ipv4, ipv6), number bounds (exclusive too)
and ``multipleOf``. Not covered: ``pattern`` (the text is kept as is) and ``uniqueItems`` with
``minItems`` above 1 when the item schema allows one value only.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

MAX_DEPTH = 32

# A valid value for each string format the JSON Schema spec names that Pydantic emits.
FORMATS: dict[str, str] = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "duration": "PT1S",
    "email": "sim@example.com",
    "idn-email": "sim@example.com",
    "uri": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "hostname": "example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
}


def instance_of(schema: Any, text: str, root: Any = None, depth: int = 0) -> Any:
    """A value that satisfies ``schema``: strings are ``text`` (cut or padded to the length
    bounds), enums their first value, numbers the ``maximum`` (else ``minimum``, else 100)
    moved inside exclusive bounds and onto ``multipleOf``, booleans ``true``, arrays one item
    (or ``minItems``), objects every property. Local ``$ref`` is followed."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return text
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return instance_of(target, text, root, depth + 1)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        return instance_of(_merged(schema, all_of, root), text, root, depth + 1)
    for union in ("anyOf", "oneOf"):
        options = schema.get(union)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, dict) and _kind(o) == "null")]
            return instance_of((usable or options)[0], text, root, depth + 1)
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "const" in schema:
        return schema["const"]
    kind = _kind(schema)
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        return {k: instance_of(v, text, root, depth + 1) for k, v in props.items()}
    if kind == "array":
        return _array(schema, text, root, depth)
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, text)


def _merged(schema: dict[str, Any], all_of: list[Any], root: Any) -> dict[str, Any]:
    """``schema`` with every part of its ``allOf`` merged in (their properties joined)."""
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for each in all_of:
        part = _resolved(each, root)
        joined = {**merged.get("properties", {}), **part.get("properties", {})}
        merged.update(part)
        if joined:
            merged["properties"] = joined
    return merged


def _resolved(schema: Any, root: Any) -> dict[str, Any]:
    """``schema`` with a local ``$ref`` followed (one step), for merging ``allOf``."""
    if not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return dict(target) if isinstance(target, dict) else {}
    return schema


def _kind(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if kind is not None:
        return str(kind).lower()
    if "properties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return ""


def _array(schema: dict[str, Any], text: str, root: Any, depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    out: list[Any] = []
    if isinstance(prefix, list):
        out = [instance_of(s, text, root, depth + 1) for s in prefix]
    items = schema.get("items")
    want = max(_int(schema.get("minItems"), 0), 0 if isinstance(prefix, list) else 1)
    while len(out) < want and items is not False:
        out.append(instance_of(items, text, root, depth + 1))
    high = schema.get("maxItems")
    return out[:high] if isinstance(high, int) and not isinstance(high, bool) else out


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    value: float = 100
    for key in ("maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum"):
        bound = schema.get(key)
        if isinstance(bound, int | float) and not isinstance(bound, bool):
            value = bound
            break
    step = 1.0 if integer else 0.5
    high, low = schema.get("exclusiveMaximum"), schema.get("exclusiveMinimum")
    if isinstance(high, int | float) and value >= high:
        value = high - step
    if isinstance(low, int | float) and value <= low:
        value = low + step
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and multiple > 0:
        below = math.floor(value / multiple) * multiple
        floor = schema.get("minimum", low)
        fits = (
            not isinstance(floor, int | float)
            or below > floor
            or (below == floor and "minimum" in schema)
        )
        value = below if fits else math.ceil(value / multiple) * multiple
    return int(value) if integer else value


def _string(schema: dict[str, Any], text: str) -> str:
    fmt = schema.get("format")
    value = FORMATS.get(fmt, text) if isinstance(fmt, str) else text
    low = _int(schema.get("minLength"), 0)
    high = schema.get("maxLength")
    if len(value) < low:
        value += "." * (low - len(value))
    if isinstance(high, int) and len(value) > high:
        value = value[:high]
    return value


def json_answer(schema: dict[str, Any] | None, text: str) -> str:
    """The simulators' structured answer: an instance of ``schema`` as compact JSON, or
    ``{"answer": text}`` when only a JSON object was asked for."""
    value = instance_of(schema, text) if schema is not None else {"answer": text}
    return orjson.dumps(value).decode()
