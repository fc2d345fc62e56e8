"""Configured secrets out of everything that leaves the process: upstream error text, log
records, config errors, captured events.

A ``Scrubber`` knows a set of secret values and replaces each of them, and its common
encodings, with ``[SECRET]``: as is, JSON-escaped, percent-encoded, hex (either case), and
base64 and URL-safe base64 at each of the three byte alignments (the middle of the encoding
that does not depend on the bytes around the secret, as in a Basic auth header), padded or not.
A text cut short (an upstream message truncated to 300 characters) may end with the start of a
secret; ``Scrubber.cut`` removes that too.

The process's secrets live in one registry, ``SECRETS``: the gateway adds the values of its
settings (``gateway.secrets.secret_values``) at start-up and on a key reload; they are never
removed (an old key is still a secret). Registering the first secret installs a log record
factory, so every log record of the process is scrubbed before any handler sees it, whatever
logger it came from.
Values shorter than ``MIN_CHARS`` are not scrubbed: they would erase ordinary words and numbers.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlsplit

LABEL = "[SECRET]"
MIN_CHARS = 8
# A cut-off secret at the end of a text is removed from this many characters on.
MIN_CUT = 4


# What a credential looks like, wherever it is written: the patterns redaction uses for the
# credentials in captured text (``standby.redaction``), and config errors lose. Each starts with
# a literal or a character set (a fast scan); a check that looks left of the match comes after
# its first character (``(?<!\w.)``: the character before is not a letter or digit).
_TOKEN_CHARS = r"A-Za-z0-9+/_\-"
CREDENTIAL_PATTERNS: dict[str, str] = {
    "PRIVATE_KEY": (
        r"-----BEGIN[A-Z ]*PRIVATE KEY(?: BLOCK)?-----"
        r"[\s\S]*?(?:-----END[A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"
    ),
    "BEARER": r"(?i)[b](?<!\w.)earer\s+[a-z0-9._~+/=-]{8,}",
    "JWT": r"eyJ(?<![\w-]...)[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
    "API_KEY": (
        r"[sArhgx](?<!\w.)(?:(?<=s)k-[A-Za-z0-9_-]{16,}|(?<=[sr])k_(?:live|test)_[A-Za-z0-9]{16,}"
        r"|(?<=A)Iza[0-9A-Za-z_-]{30,}|(?<=A)(?:KIA|SIA)[0-9A-Z]{16}|(?<=h)f_[A-Za-z0-9]{20,}"
        r"|(?<=g)h[pousr]_[A-Za-z0-9]{20,}|(?<=g)ithub_pat_[A-Za-z0-9_]{22,}"
        r"|(?<=g)lpat-[A-Za-z0-9_-]{20,}|(?<=x)ox[abposr]-[A-Za-z0-9-]{10,})"
    ),
    # a URL's user:password (not one already masked as ``***``, store.urls.safe_url's way)
    "PASSWORD": r"://[^\s:/@]{0,64}:(?!\*\*\*@)[^\s/@]{1,128}@",
    "TOKEN": rf"[{_TOKEN_CHARS}](?<![{_TOKEN_CHARS}=].)[{_TOKEN_CHARS}]{{31,}}+={{0,2}}"
    rf"(?![{_TOKEN_CHARS}=])",
}
_CREDENTIALS = [(kind, re.compile(p)) for kind, p in CREDENTIAL_PATTERNS.items()]


def is_token(text: str) -> bool:
    """Whether a TOKEN match is a secret: 32+ hex digits with digits and letters, or base64
    characters with digits, upper and lower case, not mostly words (an identifier such as
    ``createUserAccountWithOAuth2Token`` is words; a random key is not)."""
    body = text.rstrip("=")
    if not any(c.isdigit() for c in body):
        return False
    if all(c in "0123456789abcdefABCDEF" for c in body):
        return any(c.isalpha() for c in body)
    if not (any(c.isupper() for c in body) and any(c.islower() for c in body)):
        return False
    alnum = sum(c.isalnum() for c in body)  # a path's or name's separators are not words
    wordy = sum(len(w) for w in _WORDS.findall(body)) / alnum
    return wordy < 0.7 and _entropy(body) > 3.5


_WORDS = re.compile(r"[A-Z]?[a-z]{3,}|[A-Z]{4,}")


def _entropy(text: str) -> float:
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def encodings(secret: str) -> set[str]:
    """``secret`` as it may show up in text (each at least ``MIN_CHARS`` long)."""
    raw = secret.encode()
    found = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        raw.hex(),
        raw.hex().upper(),
    }
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        found.update((whole, whole.rstrip("=")))
        for shift in range(3):
            text = encode(b"\0" * shift + raw).decode()
            found.add(text[(0, 2, 3)[shift] : -4])
    return {text for text in found if len(text) >= MIN_CHARS}


class Scrubber:
    """Replaces every known secret value, in each of its encodings, by ``[SECRET]``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._variants: tuple[str, ...] = ()
        self._needles: tuple[str, ...] = ()  # the variants that hold no other one
        self._pattern: re.Pattern[str] | None = None
        self._json: re.Pattern[str] | None = None
        self.add(secrets)

    def __bool__(self) -> bool:
        return self._pattern is not None

    @property
    def secrets(self) -> list[str]:
        return sorted(self._secrets)

    @property
    def needles(self) -> tuple[str, ...]:
        """What ``found`` searches for: each encoding of each secret that holds no other."""
        return self._needles

    def add(self, secrets: Iterable[str]) -> bool:
        """Know ``secrets`` from now on (blank and short values are ignored); True when one
        was new."""
        new = {s for s in secrets if len(s.strip()) >= MIN_CHARS} - self._secrets
        if not new:
            return False
        with self._lock:
            self._secrets |= new
            variants: set[str] = set()
            for secret in self._secrets:
                variants |= encodings(secret)
            # Longest first: a whole encoding wins over the middle part it contains.
            self._variants = tuple(sorted(variants, key=lambda v: (-len(v), v)))
            # Finding is a substring test per needle (C-fast, about 0.1 us each on a log
            # line), far cheaper than the alternation below on text that holds none.
            self._needles = tuple(
                v for v in self._variants if not any(o != v and o in v for o in self._variants)
            )
            self._pattern = _alternation(self._variants)
            # Inside a JSON string only what is valid string content can occur (a quote is
            # escaped there): replacing anything else could break the document.
            self._json = _alternation(v for v in self._variants if _json_content(v))
        return True

    def __call__(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not self.found(text):
            return text
        return pattern.sub(LABEL, text)

    def found(self, text: str) -> bool:
        """Whether ``text`` holds a secret in any of its encodings."""
        return any(needle in text for needle in self._needles)

    def cut(self, text: str) -> str:
        """``text`` scrubbed, and without the start of a secret it may end with (a message
        truncated mid-secret keeps the secret's first characters otherwise)."""
        text = self(text)
        tail = text[-MIN_CUT:]
        if len(tail) < MIN_CUT:
            return text
        longest = 0
        for variant in self._variants:
            # variant[:n] ends the text only where the text's last characters sit in it.
            at = variant.find(tail)
            while at >= 0:
                n = at + MIN_CUT
                if n > longest and n < len(variant) and text.endswith(variant[:n]):
                    longest = n
                at = variant.find(tail, at + 1)
        return text[:-longest] + LABEL if longest else text

    def json(self, body: bytes) -> bytes:
        """A JSON document (an encoded event) with the secrets in its strings replaced; it
        stays valid JSON (only forms that are valid string content are replaced: a secret with
        a quote is found in its escaped form)."""
        pattern = self._json
        if pattern is None:
            return body
        text = body.decode()
        if not self.found(text):
            return body
        return pattern.sub(LABEL, text).encode()


def _json_content(text: str) -> bool:
    try:
        json.loads(f'"{text}"')
    except ValueError:
        return False
    return True


def _alternation(variants: Iterable[str]) -> re.Pattern[str] | None:
    listed = list(variants)
    return re.compile("|".join(map(re.escape, listed))) if listed else None


_SECRET_NAME = re.compile(r"key|token|secret|passw|pwd|credential|auth", re.IGNORECASE)


def url_secrets(url: str) -> list[str]:
    """The password of ``url`` and the values of secret-named query parameters (``?key=``)."""
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        return []
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if value and _SECRET_NAME.search(name):
            found.append(value)
    return found


def named_secrets(value: Any) -> list[str]:
    """String values (or lists of strings) of members whose names say they hold a secret, at
    any depth."""
    found: list[str] = []
    if isinstance(value, dict):
        for name, item in value.items():
            secret = _SECRET_NAME.search(str(name)) is not None
            if secret and isinstance(item, str):
                found.append(item)
            elif secret and isinstance(item, list) and all(isinstance(i, str) for i in item):
                found += item
            else:
                found += named_secrets(item)
    elif isinstance(value, list):
        for item in value:
            found += named_secrets(item)
    return found


def secret_inputs(value: Any) -> list[str]:
    """The secrets in a raw config (parsed, not validated yet): secret-named members' values
    and the passwords of its URLs."""
    found = named_secrets(value)
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += item.values()
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, str) and "://" in item:
            found += url_secrets(item)
    return found


# -- the process's secrets -----------------------------------------------------------------

SECRETS = Scrubber()
_factory_installed = False


def register(secrets: Iterable[str]) -> None:
    """Add ``secrets`` to the process's registry; the first ones install the log scrubbing."""
    global _factory_installed
    SECRETS.add(secrets)
    if SECRETS and not _factory_installed:
        _factory_installed = True
        logging.setLogRecordFactory(_scrubbing(logging.getLogRecordFactory()))


def scrub(text: str) -> str:
    """``text`` without the process's secrets."""
    return SECRETS(text)


def scrub_config(text: str, secrets: Iterable[str] = ()) -> str:
    """A config error's line without a secret: the process's secrets and ``secrets`` (the
    values of a config being read), then anything shaped like a credential
    (``CREDENTIAL_PATTERNS``: a vendor key, a high-entropy token, a URL's ``user:password``...),
    which catches a key written where a name belongs."""
    text = Scrubber(secrets)(SECRETS(text))
    for kind, pattern in _CREDENTIALS:
        text = pattern.sub(_credential(kind), text)
    return text


def _credential(kind: str) -> Callable[[re.Match[str]], str]:
    label = f"[{kind}]"

    def replace(match: re.Match[str]) -> str:
        found = match.group()
        if kind == "PASSWORD":
            return f"://{label}@"
        return label if kind != "TOKEN" or is_token(found) else found

    return replace


def scrub_cut(text: str) -> str:
    """``text`` without the process's secrets, whole or cut off at its end."""
    return SECRETS.cut(text) if SECRETS else text


def _scrubbing(factory: Any) -> Any:
    """A log record factory that makes records through ``factory`` and scrubs their message
    (the formatted one: secrets may be in the arguments) and exception text."""

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it when it formats
            return record
        if SECRETS.found(message):
            record.msg, record.args = SECRETS(message), None
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if SECRETS.found(text):
                record.exc_text = SECRETS(text)
                record.exc_info = None
        return record

    return make
