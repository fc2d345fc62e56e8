"""Structured output on the local backend: ``response_format`` compiled to a grammar that masks
the tokens a JSON answer cannot continue with (constrained decoding, ``llguidance``).

``json_object`` is any JSON object; ``json_schema`` is the client's schema. Whitespace between
tokens is not allowed (compact JSON, ``,`` and ``:`` without spaces): a small model given the
choice can spend its whole token budget on blank lines. A schema the library cannot compile
(an unknown ``type``, a ``$ref`` that points nowhere, ``oneOf``, look-around in a ``pattern``,
an unsatisfiable schema) is the client's problem, not the backend's: ``problem()`` says why in
a line and the provider reports it through ``unsupported()`` (failover skips this backend
without counting a failure, and the client gets a 400 when no backend of the route can serve
the request). Compiled grammars are cached by the schema's JSON.

``docs/benchmarks.md`` has the comparison that chose llguidance (cost per token on CPU and
validity against ``jsonschema`` next to xgrammar and lm-format-enforcer).
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

import llguidance
import llguidance.hf

if TYPE_CHECKING:  # a TypedDict of the type stubs only
    from llguidance._lib import JsonCompileOptions

# Compact JSON: the separators OpenAI's own JSON mode writes, no free whitespace.
_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False}
_CACHE_SIZE = 256


def schema_of(response_format: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema a ``response_format`` (``json_object`` / ``json_schema``) asks for."""
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return schema
    return {"type": "object"}


class Grammars:
    """Compiles ``response_format``s for one tokenizer and makes a matcher per answer."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos: int) -> None:
        """``eos`` is the token a matcher allows once the JSON is complete (one of the tokens
        that end the model's turn)."""
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=eos)
        self._compile = functools.lru_cache(maxsize=_CACHE_SIZE)(self._compile_json)

    def problem(self, response_format: dict[str, Any]) -> str | None:
        """Why ``response_format`` cannot be enforced, in a line (None: it can)."""
        return self._compile(_key(response_format))[1] or None

    def matcher(self, response_format: dict[str, Any]) -> llguidance.LLMatcher:
        """A fresh matcher at the start of an answer; ValueError when it cannot compile."""
        grammar, error = self._compile(_key(response_format))
        if error:
            raise ValueError(error)
        return llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)

    def token_bytes(self, token: int) -> bytes:
        """The bytes token ``token`` stands for (a piece of a UTF-8 character, maybe)."""
        return self.tokenizer.decode_bytes([token])

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.tokenize_str(text)

    def _compile_json(self, key: str) -> tuple[str, str]:
        schema = json.loads(key)
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_OPTIONS)
        except ValueError as e:
            return "", _where(str(e))
        error = llguidance.LLMatcher.validate_grammar(grammar, self.tokenizer)
        return grammar, _where(error) if error else ""


def _key(response_format: dict[str, Any]) -> str:
    # Keys keep their order: the answer's properties come in the schema's order.
    return json.dumps(schema_of(response_format), separators=(",", ":"))


def _where(error: str) -> str:
    first = " ".join(error.split())
    return f"response_format.json_schema.schema cannot be enforced: {first[:300]}"
