"""SIMULATION: how TGI reads a grammar (native ``parameters.grammar``, Messages API
``response_format``) and what the simulated TGI answers under one.

Copied from TGI's router: ``GrammarType`` (router/src/lib.rs) is ``{"type", "value"}`` with
``type`` one of ``json`` (alias ``json_object``: a JSON Schema, or a string holding one),
``regex`` (a string) and ``json_schema`` (``{"name"?, "schema"}``); anything else fails to
deserialize (a 422 in plain text, as axum's JSON extractor answers). Then
router/src/validation.rs: the schema must be valid under draft 2020-12 and have
``properties`` at its root, else a 422 ``validation`` error "Input validation error: grammar is
not valid: ...". A ``json`` value that is neither an object nor a string is "grammar is not
supported".

Under a JSON grammar the answer is a schema instance (``schema_instance``); under a regex the
simulation keeps its fixed sentence (it does not generate strings from a regex).
"""

from __future__ import annotations

from typing import Any

import jsonschema  # type: ignore[import-untyped]
import orjson

VARIANTS = ("json", "json_object", "regex", "json_schema")


class Undecodable(ValueError):
    """The body does not deserialize into TGI's types (axum: 422, plain text)."""


class InvalidGrammar(ValueError):
    """TGI's ``ValidationError`` about a grammar (422, ``error_type: validation``)."""


def schema_of(grammar: Any, where: str) -> dict[str, Any] | None:
    """The JSON Schema a grammar constrains the answer to (None: a regex, or no grammar).
    ``where`` names the field in messages (``parameters.grammar``, ``response_format``)."""
    if grammar is None:
        return None
    if not isinstance(grammar, dict):
        raise Undecodable(f"{where}: invalid type: expected internally tagged enum GrammarType")
    kind = grammar.get("type")
    if kind not in VARIANTS:
        expected = ", ".join(f"`{v}`" for v in VARIANTS)
        raise Undecodable(f"{where}: unknown variant `{kind}`, expected one of {expected}")
    if "value" not in grammar:
        raise Undecodable(f"{where}: missing field `value`")
    value = grammar["value"]
    if kind == "regex":
        if not isinstance(value, str):
            raise Undecodable(f"{where}.value: invalid type: expected a string")
        return None
    if kind == "json_schema":
        if not isinstance(value, dict) or "schema" not in value:
            raise Undecodable(f"{where}.value: missing field `schema`")
        schema = value["schema"]
    elif isinstance(value, str):
        try:
            schema = orjson.loads(value)
        except orjson.JSONDecodeError as e:
            raise InvalidGrammar(f"grammar is not valid: {e}") from None
    elif isinstance(value, dict):
        schema = value
    else:
        raise InvalidGrammar("grammar is not supported")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise InvalidGrammar(f"grammar is not valid: {e.message}") from None
    if not isinstance(schema, dict) or "properties" not in schema:
        raise InvalidGrammar("grammar is not valid: Grammar must have a 'properties' field")
    return schema
