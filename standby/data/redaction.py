"""Redaction applied to captured text before anything is written anywhere.

Defaults cover e-mail addresses, card numbers, phone numbers, bearer tokens and strings that
look like API keys; configured patterns are added to them. Each match becomes ``[KIND]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

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


# A cheap test per default rule: text that fails it cannot match the rule, so the (slower)
# pattern is not run. Captured text is mostly prose without any of these.
_DIGIT = re.compile(r"\d")
_DIGITS = re.compile(r"\d{3}")
_KEY_HINTS = ("sk-", "aiza", "hf_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "akia",
              "key", "token", "secret")  # fmt: skip

_TRIGGERS: dict[str, Callable[[str, str], bool]] = {
    "BEARER": lambda text, lower: "bearer" in lower,
    "API_KEY": lambda text, lower: any(t in lower for t in _KEY_HINTS),
    "EMAIL": lambda text, lower: "@" in text,
    "CARD": lambda text, lower: _DIGIT.search(text) is not None,  # "4 1 1 1 ..." too
    "PHONE": lambda text, lower: _DIGITS.search(text) is not None,
}


def _always(text: str, lower: str) -> bool:
    return True


class Redactor:
    """Replaces every match of its patterns, in order (most specific first)."""

    def __init__(self, extra: Iterable[str] = (), *, defaults: bool = True) -> None:
        rules = list(DEFAULT_PATTERNS.items()) if defaults else []
        rules += [("REDACTED", pattern) for pattern in extra]
        self._rules = [
            (re.compile(p), f"[{kind}]", _TRIGGERS.get(kind, _always)) for kind, p in rules
        ]

    def __call__(self, text: str) -> str:
        lower = text.lower()
        for rule, label, may_match in self._rules:
            if may_match(text, lower):
                text = rule.sub(label, text)
        return text
