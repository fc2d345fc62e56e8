"""OpenAI's ``response_format`` as Text Generation Inference's JSON grammar, for TGI's native API
(``parameters.grammar``, ``providers.tgi``) and its Messages API (``response_format``, an
``openai`` backend with ``structured_output: tgi``).

TGI's grammar is ``{"type": "json", "value": <JSON Schema>}`` (``json_object`` is an alias of
``json``; router/src/lib.rs ``GrammarType``). Its router compiles the schema to a regex
(outlines-core) after two checks (router/src/validation.rs): the schema must be valid under
draft 2020-12, and (since TGI 2.3) its root must have ``properties``, else a 422 "Grammar
must have a 'properties' field". A schema with ``properties`` allows those keys only, so TGI
cannot ask for "any JSON object": ``json_object`` has no grammar there, and such a request is
``unsupported`` on a TGI backend rather than answered without a constraint or refused by TGI
mid-failover.

``strict`` is not sent: TGI always constrains the output to the grammar (as strict as it gets).
"""

from __future__ import annotations

from typing import Any


def schema_of(fmt: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema of a ``json_schema`` response_format (None for ``json_object``)."""
    if fmt.get("type") != "json_schema":
        return None
    schema = (fmt.get("json_schema") or {}).get("schema")
    return schema if isinstance(schema, dict) else None


def refusal(fmt: dict[str, Any] | None) -> str | None:
    """Why TGI cannot constrain its answer to ``fmt``, in words for the client (None: it can)."""
    if fmt is None:
        return None
    if fmt.get("type") == "json_object":
        return (
            "TGI's grammar needs a JSON schema with properties: json_object (any JSON object) "
            "cannot be constrained there; send response_format json_schema"
        )
    schema = schema_of(fmt)
    if schema is None or not isinstance(schema.get("properties"), dict):
        return "TGI's grammar needs a JSON schema whose root has 'properties'"
    return None


def grammar(fmt: dict[str, Any] | None, *, kind: str = "json") -> dict[str, Any] | None:
    """TGI's grammar for ``fmt`` (``refusal(fmt)`` must be None). ``kind`` is ``json`` (the
    native API's name, as huggingface_hub types it) or ``json_object`` (the name TGI's Messages
    API documents; the same grammar)."""
    if fmt is None:
        return None
    schema = schema_of(fmt)
    assert schema is not None, "refusal() said TGI cannot take this response_format"
    return {"type": kind, "value": schema}
