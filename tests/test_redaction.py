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


ARABIC_INDIC, FULL_WIDTH, DEVANAGARI = 0x0660, 0xFF10, 0x0966  # each script's zero


def digits(text: str, zero: int) -> str:
    """``text`` with its ASCII digits written in another script."""
    return "".join(chr(zero + int(c)) if c.isdigit() else c for c in text)


# #19 item 5: each form that was stored as it was, with the kind it becomes.
FORMS = [
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "[API_KEY]"),
    ("export aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "export [API_KEY]"),
    ("DB_PASSWORD=s3cr3t-Pa55 in .env", "[PASSWORD] in .env"),
    ("login with password: hunter2!x please", "login with [PASSWORD] please"),
    ('{"db_password": "correct horse"}', '{"[PASSWORD]}'),
    ("pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz ok", "pat [API_KEY] ok"),
    ("stripe sk_live_51HabcdefGHIJKLmnop1234 ok", "stripe [API_KEY] ok"),
    ("gitlab glpat-abcdefghij0123456789 ok", "gitlab [API_KEY] ok"),
    (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0 ok",
        "jwt [JWT] ok",
    ),
    (
        "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3\n-----END RSA PRIVATE"
        " KEY-----\nthanks",
        "key:\n[PRIVATE_KEY]\nthanks",
    ),
    ("cut -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQ", "cut [PRIVATE_KEY]"),
    ("my SSN is 078-05-1120.", "my SSN is [SSN]."),
    ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN [IBAN] please"),
    ("IBAN GB82WEST12345698765432.", "IBAN [IBAN]."),
    ("write to josé.müller@beispiel.de now", "write to [EMAIL] now"),
    ("邮件 用户@例子.广告 谢谢", "邮件 [EMAIL] 谢谢"),
    ("key 3f1c9a0b27d64e58c1f0a9b8e7d6c5b4a39281706f5e4d3c ok", "key [TOKEN] ok"),  # hex -24
    ("token-less 9fK2mQ7xLp4Rt8Wz1Vb6Nc3Hd5Jg0Ys2Ea7Uq ok", "token-less [TOKEN] ok"),
    ("call (415) 555-2671 today", "call [PHONE] today"),
    ("card " + digits("4111 1111 1111 1111", ARABIC_INDIC) + " ok", "card [CARD] ok"),
    ("card " + digits("4111 1111 1111 1111", FULL_WIDTH) + " ok", "card [CARD] ok"),
    ("tel " + digits("\uff0b44 20 7946 0958", FULL_WIDTH) + " ok", "tel [PHONE] ok"),
    ("tel " + digits("+91 22 4567 8901", DEVANAGARI) + " ok", "tel [PHONE] ok"),
    ("redis://default:s3cret-pw@cache:6379/0", "redis://[PASSWORD]@cache:6379/0"),
]


@pytest.mark.parametrize(("text", "expected"), FORMS)
def test_each_form_of_issue_19_is_redacted(text: str, expected: str) -> None:
    assert Redactor()(text) == expected


def test_numbers_that_are_not_an_ssn_or_an_iban_stay() -> None:
    assert Redactor()("ticket 000-12-3456 and 987-65-4321") == "ticket 000-12-3456 and 987-65-4321"
    assert Redactor()("part DE89 3704 0044 0532 0130 01") != "part [IBAN]"  # bad check digits


PROSE_AND_CODE = """In 2024 the team shipped 3 releases; the last one cost $1,299.99 and took 12:30.
Version 2.1.0 fixed issue #4521 (see page 17) on 2024-03-15, at 08:00 UTC, for 1.5x the speed.

```python
def create_user_account_with_oauth2_token(request: Request) -> Response:
    key = request.headers.get("x-api-key")  # the header's name, not a key
    token_count = len(tokens) + 1
    for i in range(100):
        total += prices[i] * 1.07
    return Response(status=201, body={"id": user.id, "created": "2024-01-01T00:00:00Z"})
```
The ratio is 3/4; createUserAccountWithOAuth2Token and HTTPSConnectionPool2MaxRetries are
names; e.g. the UUID 550e8400-e29b-41d4-a716-446655440000 and the path
src/components/UserProfile/Settings2.tsx stay, and so does
/tmp/pytest-of-root/pytest-82/test_broken_file_is_one_line_N0/standby.yaml. Passwords must be
at least 12 characters.
"""


def test_ordinary_prose_and_code_come_through_unchanged() -> None:
    assert Redactor()(PROSE_AND_CODE) == PROSE_AND_CODE
    assert Redactor().json_value({"type": "object", "properties": {"year": {"enum": [2024]}}}) == {
        "type": "object",
        "properties": {"year": {"enum": [2024]}},
    }


def test_json_value_redacts_schemas_and_stop_sequences() -> None:
    params = {
        "temperature": 0.2,
        "stop": ["END", "mail bob@example.com"],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"schema": {"description": "call +44 20 7946 0958", "type": "string"}},
        },
    }
    out = Redactor().json_value(params)
    assert out["stop"] == ["END", "mail [EMAIL]"]
    assert out["response_format"]["json_schema"]["schema"]["description"] == "call [PHONE]"
    assert out["temperature"] == 0.2
    unchanged = {"temperature": 0.2, "stop": ["END"]}
    assert Redactor().json_value(unchanged) is unchanged
