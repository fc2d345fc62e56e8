"""Redaction applied to captured text before anything is written anywhere.

Defaults cover e-mail addresses, card numbers, phone numbers, bearer tokens and strings that
look like API keys; configured patterns are added to them. Each match becomes ``[KIND]``.
JSON text (a tool call's arguments) is redacted value by value (``Redactor.json_text``), so it
stays valid JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

DEFAULT_PATTERNS: dict[str, str] = {
    "BEARER": r"(?i)\bbearer\s+[a-z0-9._~+/=-]{8,}",
    "API_KEY": (
        r"\b(?:sk-[A-Za-z0-9_-]{16,}|AIza[0-9A-Za-z_-]{30,}|hf_[A-Za-z0-9]{20,}"
        r"|gh[pousr]_[A-Za-z0-9]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}"
        r"|[A-Za-z0-9_-]*(?:key|token|secret)[A-Za-z0-9_-]*[=:]\s*['\"]?[A-Za-z0-9._~+/-]{12,})"
    ),
    "EMAIL": r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b",
    "CARD": r"\b(?:\d[ -]?){12,18}\d\b",
    "PHONE": r"(?<![\w+])\+?\d{1,3}[ .-]?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}\b",
}


# What must be in a text before each default rule's (slower) pattern can match, as plain
# substring tests (memchr-fast); they run once per text. Captured text is mostly prose without
# any of these. API_KEY is case-sensitive: one of the vendor prefixes ("gh?_" needs "gh" and
# "_"), or a key/token/secret word with an assignment ("=" or ":") - prose with a colon alone
# does not run it (its assignment branch is the slowest pattern here).
_DIGITS = "0123456789"
_KEY_PREFIXES = ("sk-", "AIza", "hf_", "xox", "AKIA")
_KEY_WORDS = ("key", "token", "secret")
_NEEDS = {
    "BEARER": "bearer",
    "API_KEY": "key-hint",
    "EMAIL": "@",
    "CARD": "digit",
    "PHONE": "digit",
}


# A JSON member whose name says it holds a secret, with a key-like value: the JSON form of
# API_KEY's ``name=value`` branch (whose pattern cannot see through the quotes).
_SECRET_NAME = re.compile(r"key|token|secret", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"[A-Za-z0-9._~+/-]{12,}")


def _present(text: str) -> set[str]:
    found = {"bearer"} if "bearer" in text.lower() else set()
    if "@" in text:
        found.add("@")
    for digit in _DIGITS:
        if digit in text:
            found.add("digit")
            break
    if _key_hint(text):
        found.add("key-hint")
    return found


def _key_hint(text: str) -> bool:
    if any(prefix in text for prefix in _KEY_PREFIXES) or ("gh" in text and "_" in text):
        return True
    return ("=" in text or ":" in text) and any(word in text for word in _KEY_WORDS)


class Redactor:
    """Replaces every match of its patterns, in order (most specific first)."""

    def __init__(self, extra: Iterable[str] = (), *, defaults: bool = True) -> None:
        rules = list(DEFAULT_PATTERNS.items()) if defaults else []
        extra = list(extra)
        rules += [("REDACTED", pattern) for pattern in extra]
        self._rules = [(re.compile(p), f"[{kind}]", _NEEDS.get(kind)) for kind, p in rules]
        self._api_keys = defaults  # the API_KEY rule also applies to JSON members (json_text)

    def __call__(self, text: str) -> str:
        return self.many([text])[0]

    def many(self, texts: list[str]) -> list[str]:
        """Each of ``texts`` redacted. The pre-checks run once, over all of them together: a
        substring of one text is a substring of them joined, so no rule that could match is
        skipped (an answer's prompt and response usually need none)."""
        present = _present(texts[0] if len(texts) == 1 else "\n".join(texts))
        rules = [
            (rule, label) for rule, label, needs in self._rules if needs is None or needs in present
        ]
        if not rules:
            return texts
        redacted = []
        for text in texts:
            for rule, label in rules:
                text = rule.sub(label, text)
            redacted.append(text)
        return redacted

    def json_text(self, text: str) -> str:
        """JSON text with each of its strings and member names redacted, and numbers that are
        card numbers, written as JSON again (so it still parses; a redacted number becomes a
        string), or ``text`` itself when nothing matched. Text that is not JSON is redacted as
        text."""
        try:
            value = json.loads(text)
        except ValueError:
            return self(text)
        leaves: list[str] = []
        _leaves(value, leaves)
        redacted = self.many(leaves) if leaves else leaves
        secrets = self._api_keys and _has_secret(value)
        cards = self._api_keys and _has_card_number(value)
        if redacted == leaves and not secrets and not cards:
            return text
        out = _rebuild(value, iter(redacted), secrets=secrets, cards=cards)
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def _has_card_number(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_card_number(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_card_number(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool) and _card_number(value)


def _has_secret(value: Any) -> bool:
    """A member anywhere in ``value`` that looks like ``"api_key": "<key>"``."""
    if isinstance(value, dict):
        return any(_secret(k, v) or _has_secret(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_secret(v) for v in value)
    return False


def _secret(name: str, value: Any) -> bool:
    return (
        isinstance(value, str)
        and _SECRET_NAME.search(name) is not None
        and _SECRET_VALUE.fullmatch(value) is not None
    )


def _card_number(value: int | float) -> bool:
    """A JSON number that is a payment card number: 13-19 digits passing the Luhn check.
    Other numbers (timestamps, ids, amounts) keep their type, so arguments still match the
    schema they were called with."""
    digits = str(value) if isinstance(value, int) else ""
    if not 13 <= len(digits) <= 19 or not digits.isdigit():
        return False
    total = 0
    for i, d in enumerate(int(c) for c in reversed(digits)):
        total += d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2)
    return total % 10 == 0


def _leaves(value: Any, out: list[str]) -> None:
    """The texts of a JSON value in document order: member names and strings (numbers are
    judged apart, ``_card_number``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            out.append(k)
            _leaves(v, out)
    elif isinstance(value, list):
        for v in value:
            _leaves(v, out)
    elif isinstance(value, str):
        out.append(value)


def _rebuild(value: Any, redacted: Iterator[str], *, secrets: bool, cards: bool) -> Any:
    """``value`` with its leaves (in ``_leaves`` order) replaced by ``redacted``."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            name = next(redacted)
            new = _rebuild(v, redacted, secrets=secrets, cards=cards)
            out[name] = "[API_KEY]" if secrets and _secret(k, v) else new
        return out
    if isinstance(value, list):
        return [_rebuild(v, redacted, secrets=secrets, cards=cards) for v in value]
    if isinstance(value, str):
        return next(redacted)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "[CARD]" if cards and _card_number(value) else value
    return value
