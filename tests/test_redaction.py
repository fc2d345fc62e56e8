"""Redaction rules: what each default rule catches, and prose passing through untouched."""

from __future__ import annotations

import json

import pytest

from standby.redaction import Redactor, default_rules

CASES = [
    ("write to alice.smith+x@example.co.uk today", "write to [EMAIL] today"),
    ("card 4111 1111 1111 1111 exp 12/29", "card [CARD] exp 12/29"),
    ("card 4-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1", "card [CARD]"),
    ("call +44 20 7946 0958 now", "call [PHONE] now"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc", "Authorization: [BEARER]"),
    ("key sk-proj-abcdefghijklmnopqrstuv here", "key [API_KEY] here"),
    ("use ghp_abcdefghijklmnopqrstuvwxyz0123", "use [API_KEY]"),
    ("api_key=abcdef1234567890XYZ", "[API_KEY]"),
    ("the secret: abcdefghijkl1234", "the [API_KEY]"),
    ("key AIzaSyA1234567890abcdefghijklmnopqrstu", "key [API_KEY]"),
    ("aws AKIAIOSFODNN7EXAMPLE", "aws [API_KEY]"),
    ("slack xoxb-1234567890-abcdefghij", "slack [API_KEY]"),
    ("hub hf_abcdefghijklmnopqrstuvwx", "hub [API_KEY]"),
    ("BEARER abcdefghijklmnop", "[BEARER]"),
    ("Though the night is long, right?", "Though the night is long, right?"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_default_rules(text: str, expected: str) -> None:
    assert Redactor()(text) == expected


def test_extra_patterns_and_defaults_off() -> None:
    redact = Redactor([r"ACME-\d{6}"], defaults=False)
    assert redact("order ACME-123456 for bob@example.com") == "order [REDACTED] for bob@example.com"


TRICKY = [
    "Simulated answer to: say hello. It is deterministic: the same prompt, the same words.",
    "ratio: 3/4, see gh_pages and foo_bar",
    "monkey=abcdefghijklmnop tokens:  'abcdefghijklmnopq' mysecret:abcdefghijklm",
    "ghs_abcdefghijklmnopqrstuvwxyz0123 and sk-ant-abcdefghijklmnopqrst",
    "mail bob@example.org or call 020 7946 0958, bearer abcdefgh12345678",
    "Keys: none here, TOKEN=ABCDEFGHIJKLMNOP (upper case is not a rule)",
    "a_b=c, key at the end:",
    *[text for text, _ in CASES],
]


@pytest.mark.parametrize("text", TRICKY)
def test_the_pre_check_never_skips_a_match(text: str) -> None:
    """The substring pre-check only saves time: the result equals every rule applied."""
    everything = text
    for sub, _ in default_rules():
        everything = sub(everything)
    assert Redactor()(text) == everything


def test_redacting_texts_together_equals_one_by_one() -> None:
    """``many`` runs the pre-check once over all the texts (an answer's prompt and response):
    whatever the other text holds, each text comes out as if redacted alone."""
    redact = Redactor()
    for first in TRICKY:
        for second in TRICKY:
            assert redact.many([first, second]) == [redact(first), redact(second)]
    prose = ["Say hello in one short sentence.", "Hello there, friend."]
    assert redact.many(prose) is prose  # nothing to look for: the texts come back as they are


JSON_CASES = [
    ('{"to":"bob@example.com","n":4111111111111111}', {"to": "[EMAIL]", "n": "[CARD]"}),
    # numbers keep their type unless they are card numbers (Luhn): timestamps, ids, amounts
    (
        '{"at": 1733580000, "ms": 1733580000123, "n": 4111111111111112}',
        {"at": 1733580000, "ms": 1733580000123, "n": 4111111111111112},
    ),
    (
        '{"api_key": "abcdef1234567890XYZ", "city": "Paris"}',
        {"api_key": "[API_KEY]", "city": "Paris"},
    ),
    (
        '{"a": [{"token": "abcdefabcdef12"}, "call +44 20 7946 0958"]}',
        {"a": [{"token": "[API_KEY]"}, "call [PHONE]"]},
    ),
    ('{"bob@example.com": true, "n": 3}', {"[EMAIL]": True, "n": 3}),
]


@pytest.mark.parametrize(("text", "expected"), JSON_CASES)
def test_json_text_is_redacted_value_by_value_and_stays_json(text: str, expected: object) -> None:
    assert json.loads(Redactor().json_text(text)) == expected


def test_json_text_unchanged_or_not_json() -> None:
    spaced = '{"city": "Paris",  "days": [1, 2]}'
    assert Redactor().json_text(spaced) is spaced
    assert Redactor().json_text("mail bob@example.com") == "mail [EMAIL]"
    assert Redactor(defaults=False).json_text('{"api_key": "abcdef1234567890XYZ"}') == (
        '{"api_key": "abcdef1234567890XYZ"}'
    )
