"""Redaction applied to captured text before anything is written anywhere.

Each match of a rule becomes ``[KIND]``. The default rules, most specific first:

    PRIVATE_KEY  PEM private key blocks (a block cut off at the end of the text too)
    BEARER       ``Bearer <token>``
    JWT          JSON Web Tokens (``eyJ...``.``eyJ...``.``...``)
    API_KEY      vendor keys (``sk-``, ``sk_live_``, ``AIza``, ``hf_``, ``ghp_``,
                 ``github_pat_``, ``glpat-``, ``xoxb-``, ``AKIA``...) and
                 ``*key*`` / ``*token*`` / ``*secret*`` assignments (``=`` or ``:``, any case)
    PASSWORD     ``*password*`` / ``*pwd*`` / ``*passphrase*`` assignments, and the
                 ``user:password`` of a URL
    TOKEN        high-entropy tokens: 32+ hex digits, or 32+ base64 characters mixing
                 digits, upper and lower case and not made of words
    EMAIL        e-mail addresses, Unicode ones too
    IBAN         IBANs (mod-97 checked)
    SSN          US social security numbers (``123-45-6789``)
    CARD         13-19 digit card-like numbers
    PHONE        phone numbers, ``(415) 555-2671`` too

Digits are any script's (Arabic-Indic, full-width...). Configured patterns are added to them
(``[REDACTED]``). JSON text (a tool call's arguments) is redacted value by value
(``Redactor.json_text``) and JSON values (a schema, the sampling parameters) likewise
(``Redactor.json_value``), so they stay valid JSON.

Captured text is mostly prose, so every rule has a pre-check made of plain substring tests
(``_present``): a rule whose telltale characters are absent does not run.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from standby.scrub import CREDENTIAL_PATTERNS, is_token

_SEP = r"[ .\-\u3000\uff0d]"  # between a number's digit groups (full-width ones too)
# Each pattern starts with a literal or a character set, which the regular expression engine
# finds with a fast scan; a check that looks left of the match comes after its first
# character (``(?<!\w.)``: the character before the match is not a letter or digit). The
# credentials' patterns are ``standby.scrub``'s (config errors lose them too).
DEFAULT_PATTERNS: dict[str, str] = {
    **CREDENTIAL_PATTERNS,
    "IBAN": r"[A-Z](?<!\w.)[A-Z][0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
    "SSN": r"[\d](?<![\w-].)\d{2}-\d{2}-\d{4}(?![\w-])",
    "CARD": r"[\d](?<!\w.)(?:[ \-\u3000\uff0d]?\d){12,18}\b",
    "PHONE": (
        rf"[\d+\uff0b(](?<![\w+\uff0b-].)(?:(?<=\()\d{{2,4}}\)"
        rf"|(?<=[+\uff0b])\d{{1,3}}{_SEP}?\(?\d{{2,4}}\)?|(?<=\d)\d{{0,2}}{_SEP}?\(?\d{{2,4}}\)?)"
        rf"{_SEP}?\d{{3,4}}{_SEP}?\d{{3,4}}\b"
    ),
}
# Assignments, found by their name's keyword: ``AWS_SECRET_ACCESS_KEY = ...``, ``password:
# ...``, ``"db_password": "..."`` (the whole name, from its first character, is replaced too);
# a value followed by ``(`` or ``[`` is code (``key = headers.get(...)``), not a secret.
ASSIGNMENTS: dict[str, tuple[str, str]] = {
    "API_KEY": (r"(?i:key|token|secret)", r"\s*[\"']?[A-Za-z0-9._~+/=-]{12,}+(?![(\[])"),
    "PASSWORD": (
        r"(?i:passw(?:or)?d|passphrase|pwd)",
        r"[ \t]*(?:\"[^\"\n]{4,}\"|'[^'\n]{4,}'|[^\s\"',;(){}\[\]<>]{6,}+(?![(\[]))",
    ),
}
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def _is_iban(text: str) -> bool:
    """Mod-97 check of ISO 13616: the first four characters moved to the end, letters as
    10..35, the number mod 97 is 1."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    digits = "".join(str(int(c, 36)) for c in compact[4:] + compact[:4])
    return int(digits) % 97 == 1


def _is_ssn(text: str) -> bool:
    """Not an SSN: area 000, 666 or 900-999, group 00, serial 0000 (never issued)."""
    area, group, serial = (int(part) for part in text.split("-"))
    return area not in (0, 666) and area < 900 and group != 0 and serial != 0


_CHECKS: dict[str, Callable[[str], bool]] = {"TOKEN": is_token, "IBAN": _is_iban, "SSN": _is_ssn}
_KEEP = {"PASSWORD": ("://", "@")}  # a URL's user:password: the URL around it stays

# What must be in a text before each default rule's (slower) pattern can match, as plain
# substring tests; they run once per text. Single characters are searched first (memchr-fast),
# longer telltales only when their character is there. Captured text is mostly prose without
# any of these.
_NEEDS: dict[str, str] = {
    "PRIVATE_KEY": "pem",
    "BEARER": "bearer",
    "JWT": "jwt",
    "API_KEY": "vendor",
    "API_KEY=": "key",
    "PASSWORD": "url",
    "PASSWORD=": "password",
    "TOKEN": "token",
    "EMAIL": "@",
    "IBAN": "iban",
    "SSN": "digit",
    "CARD": "digit",
    "PHONE": "digit",
}
_DIGITS = "0123456789"
_ASCII = bytes(range(128))
_ANY_DIGIT = re.compile(r"[\d]")


def _present(text: str) -> set[str]:
    found: set[str] = set()
    low = text.lower()
    if "bearer" in low:
        found.add("bearer")
    if "@" in text:
        found.add("@")
        if "://" in text:
            found.add("url")
    if _has_digit(text):
        found.add("digit")
        found |= _runs(text)
    if "-" in text and "-----" in text and "PRIVATE KEY" in text:
        found.add("pem")
    if "J" in text and "eyJ" in text:
        found.add("jwt")
    if _vendor_key(text):
        found.add("vendor")
    if "=" in text or ":" in text:
        if "key" in low or "token" in low or "secret" in low:
            found.add("key")
        if "pass" in low or "pwd" in low:  # passw(or)d, passphrase
            found.add("password")
    return found


def _has_digit(text: str) -> bool:
    """Any digit of any script. ASCII digits by substring tests; others only in the text's
    non-ASCII characters (usually a few quotes and dashes, found without a Python loop)."""
    for digit in _DIGITS:
        if digit in text:
            return True
    if text.isascii():
        return False
    rest = text.encode().translate(None, _ASCII).decode()
    return _ANY_DIGIT.search(rest) is not None


def _class_map(chars: str, inside: bytes, outside: bytes) -> bytes:
    """A ``bytes.translate`` table: bytes of ``chars`` to ``inside``, all others ``outside``."""
    return bytes(inside[0] if chr(b) in chars else outside[0] for b in range(256))


_TOKEN_MAP = _class_map(string.ascii_letters + string.digits + "+/_-", b"a", b" ")
_IBAN_MAP = _class_map(string.ascii_uppercase + string.digits + " ", b"I", b" ")
_TOKEN_RUN = b"a" * 32  # TOKEN's shortest match
_IBAN_RUN = b"I" * 15  # the shortest IBAN (Norway's)


def _runs(text: str) -> set[str]:
    """In a text with digits: whether it has a run of characters as long as the shortest
    TOKEN (32 base64 characters) or IBAN (15 capitals, digits and spaces). Each is a
    ``bytes.translate`` and a substring test; non-ASCII characters end a run (a text with
    digits of other scripts is treated as having both runs)."""
    if not text.isascii() and not any(d in text for d in _DIGITS):
        return {"token", "iban"}
    raw = text.encode()
    found = set()
    if _TOKEN_RUN in raw.translate(_TOKEN_MAP):
        found.add("token")
    if _IBAN_RUN in raw.translate(_IBAN_MAP):
        found.add("iban")
    return found


def _vendor_key(text: str) -> bool:
    if "-" in text and ("sk-" in text or "xox" in text or "glpat-" in text):
        return True
    if "_" in text and ("hf_" in text or "gh" in text or "k_live_" in text or "k_test_" in text):
        return True  # "gh" covers gh?_ and github_pat_
    return "AI" in text or "IA" in text  # AIza, AKIA, ASIA


Sub = Callable[[str], str]


def _rule(kind: str, pattern: str) -> Sub:
    """``text`` with each match of ``pattern`` replaced by ``[kind]`` (only the matches that
    pass the kind's check, when it has one)."""
    compiled, label = re.compile(pattern), f"[{kind}]"
    check, keep = _CHECKS.get(kind), _KEEP.get(kind)
    if keep is not None:
        kept = f"{keep[0]}{label}{keep[1]}"
        return lambda text: compiled.sub(lambda m: kept, text)
    if check is None:
        return lambda text: compiled.sub(lambda m: label, text)

    def replace(match: re.Match[str]) -> str:
        found = match.group()
        return label if check(found) else found

    return lambda text: compiled.sub(replace, text)


def _assignment(kind: str, keyword: str, rest: str) -> Sub:
    """``text`` with each ``<name with keyword><sep><value>`` replaced by ``[kind]``: the
    keyword is found first (a fast scan), then the rest of the name, the ``=`` or ``:`` and
    the value are matched from there, and the name's start is looked for on its left."""
    find = re.compile(keyword)
    tail = re.compile(rf"[A-Za-z0-9_.-]*[\"']?[ \t]*[=:]{rest}")
    label = f"[{kind}]"

    def sub(text: str) -> str:
        out: list[str] = []
        done = 0
        for found in find.finditer(text):
            if found.start() < done:
                continue
            match = tail.match(text, found.end())
            if match is None:
                continue
            start = found.start()
            while start > done and text[start - 1] in _NAME_CHARS:
                start -= 1
            out += (text[done:start], label)
            done = match.end()
        return "".join((*out, text[done:])) if out else text

    return sub


def _email(text: str) -> str:
    """E-mail addresses, found by their ``@``: the local part on its left, the domain on its
    right (Unicode letters and digits in both)."""
    out: list[str] = []
    done = 0
    at = text.find("@")
    while at >= 0:
        start = at
        while start > done and (text[start - 1].isalnum() or text[start - 1] in "._%+-"):
            start -= 1
        domain = _DOMAIN.match(text, at + 1) if start < at else None
        if domain is not None:
            out += (text[done:start], "[EMAIL]")
            done = domain.end()
        at = text.find("@", max(at + 1, done))
    return "".join((*out, text[done:])) if out else text


_DOMAIN = re.compile(r"[\w-]+(?:\.[\w-]+)*\.(?:[^\W\d_]{2,}|xn--[\w-]+)(?![\w-])")
# The rules in the order they run: most specific first.
_ORDER = (
    "PRIVATE_KEY",
    "BEARER",
    "JWT",
    "API_KEY",
    "API_KEY=",
    "PASSWORD",
    "PASSWORD=",
    "TOKEN",
    "EMAIL",
    "IBAN",
    "SSN",
    "CARD",
    "PHONE",
)


# The kinds that are credentials (the others are personal data): what config errors lose.
SECRET_KINDS = ("PRIVATE_KEY", "BEARER", "JWT", "API_KEY", "PASSWORD", "TOKEN")


def default_rules(kinds: Collection[str] | None = None) -> list[tuple[Sub, str | None]]:
    """The default rules (of ``kinds``, else all) in the order they run, each with the
    telltale (``_present``) it needs."""
    rules: list[tuple[Sub, str | None]] = []
    for name in _ORDER:
        kind = name.rstrip("=")
        if kinds is not None and kind not in kinds:
            continue
        if name.endswith("="):
            rule = _assignment(kind, *ASSIGNMENTS[kind])
        elif kind == "EMAIL":
            rule = _email
        else:
            rule = _rule(kind, DEFAULT_PATTERNS[kind])
        rules.append((rule, _NEEDS[name]))
    return rules


class Redactor:
    """Replaces every match of its patterns, in order (most specific first)."""

    def __init__(
        self,
        extra: Iterable[str] = (),
        *,
        defaults: bool = True,
        kinds: Collection[str] | None = None,
    ) -> None:
        """``extra``: patterns whose matches become ``[REDACTED]``; ``kinds``: only these
        default rules (all by default)."""
        self._rules = default_rules(kinds) if defaults else []
        self._rules += [(_rule("REDACTED", pattern), None) for pattern in extra]
        self._api_keys = defaults  # the API_KEY rule also applies to JSON members (json_text)

    def __call__(self, text: str) -> str:
        return self.many([text])[0]

    def many(self, texts: list[str]) -> list[str]:
        """Each of ``texts`` redacted. The pre-checks run once, over all of them together: a
        substring of one text is a substring of them joined, so no rule that could match is
        skipped (an answer's prompt and response usually need none). ``texts`` itself when no
        rule needed to run."""
        if not texts:
            return texts
        present = _present(texts[0] if len(texts) == 1 else "\n".join(texts))
        rules = [sub for sub, needs in self._rules if needs is None or needs in present]
        if not rules:
            return texts
        redacted = []
        for text in texts:
            for sub in rules:
                text = sub(text)
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
        out = self.json_value(value)
        if out is value:
            return text
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))

    def json_value(self, value: Any) -> Any:
        """A JSON value (parsed) with its strings and member names redacted, secret-named
        members' values and card numbers too; ``value`` itself when nothing matched."""
        leaves: list[str] = []
        _leaves(value, leaves)
        redacted = self.many(leaves)
        secrets = self._api_keys and _has_secret(value)
        cards = self._api_keys and _has_card_number(value)
        if (redacted is leaves or redacted == leaves) and not secrets and not cards:
            return value
        return _rebuild(value, iter(redacted), secrets=secrets, cards=cards)


def _has_card_number(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_card_number(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_card_number(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool) and _card_number(value)


# A JSON member whose name says it holds a secret, with a secret-like value: the JSON form of
# the API_KEY and PASSWORD assignments (whose patterns cannot see through the quotes).
_SECRET_NAME = re.compile(r"key|token|secret", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"[A-Za-z0-9._~+/=-]{12,}")
_PASSWORD_NAME = re.compile(r"passw(?:or)?d|passphrase|pwd", re.IGNORECASE)


def _has_secret(value: Any) -> bool:
    """A member anywhere in ``value`` that looks like ``"api_key": "<key>"``."""
    if isinstance(value, dict):
        return any(_secret(k, v) is not None or _has_secret(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_secret(v) for v in value)
    return False


def _secret(name: str, value: Any) -> str | None:
    """The label of a member that holds a secret: ``[PASSWORD]``, ``[API_KEY]`` or None."""
    if not isinstance(value, str):
        return None
    if _PASSWORD_NAME.search(name) is not None and len(value) >= 4:
        return "[PASSWORD]"
    if _SECRET_NAME.search(name) is not None and _SECRET_VALUE.fullmatch(value) is not None:
        return "[API_KEY]"
    return None


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
            label = _secret(k, v) if secrets else None
            out[name] = label or new
        return out
    if isinstance(value, list):
        return [_rebuild(v, redacted, secrets=secrets, cards=cards) for v in value]
    if isinstance(value, str):
        return next(redacted)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "[CARD]" if cards and _card_number(value) else value
    return value
