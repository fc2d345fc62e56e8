"""Deterministic answers of the simulated Gemini (pure functions)."""

from __future__ import annotations

import orjson
import pytest

from standby.sim.answers import (
    SimRequest,
    answer,
    base_answer,
    continuation,
    count_tokens,
    example_for_schema,
    full_answer,
    split_chunks,
)


def test_base_answer_names_the_prompt_and_has_about_40_words() -> None:
    text = base_answer("What is the capital of France?")
    assert text.startswith("Simulated Gemini answer to: What is the capital of France? ")
    assert count_tokens(text) == 40
    assert text.endswith(".")
    assert base_answer("What is the capital of France?") == text


def test_base_answer_keeps_only_the_first_60_characters_of_the_prompt() -> None:
    prompt = "word " * 100
    text = base_answer(prompt)
    assert text.startswith("Simulated Gemini answer to: " + ("word " * 12).strip() + ".")
    assert "\n" not in base_answer("line one\n\nline two")


def test_different_prompts_get_different_answers() -> None:
    assert base_answer("a") != base_answer("b")


def test_max_tokens_cuts_words_and_reports_max_tokens() -> None:
    ans = answer(SimRequest("hello", max_tokens=5))
    assert ans.text == "Simulated Gemini answer to: hello."
    assert (ans.finish, ans.tokens) == ("MAX_TOKENS", 5)
    assert answer(SimRequest("hello", max_tokens=40)).finish == "STOP"


def test_stop_sequence_cuts_before_the_earliest_match() -> None:
    ans = answer(SimRequest("hello", stop=("standby", "answer")))
    assert ans.text == "Simulated Gemini "
    assert (ans.finish, ans.tokens) == ("STOP", 2)


def test_stop_inside_the_token_limit_wins_over_max_tokens() -> None:
    ans = answer(SimRequest("hello", stop=("answer",), max_tokens=3))
    assert (ans.text, ans.finish) == ("Simulated Gemini ", "STOP")


def test_json_mode_without_schema_is_an_object_with_the_answer() -> None:
    text = full_answer(SimRequest("hi", json_mode=True))
    assert orjson.loads(text) == {"answer": base_answer("hi")}


def test_schema_example_follows_refs_unions_enums_and_google_types() -> None:
    schema = {
        "type": "object",
        "properties": {
            "sim": {"$ref": "#/$defs/Score"},
            "label": {"type": "string", "enum": ["good", "bad"]},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 3}]},
            "flags": {"type": "ARRAY", "items": {"type": "BOOLEAN"}},
            "ratio": {"type": "NUMBER", "maximum": 0.5},
        },
        "$defs": {
            "Score": {
                "type": "OBJECT",
                "properties": {
                    "score": {"type": "INTEGER", "minimum": 1, "maximum": 10},
                    "reason": {"type": "STRING"},
                },
            }
        },
    }
    assert example_for_schema(schema, "why") == {
        "sim": {"score": 10, "reason": "why"},
        "label": "good",
        "maybe": 3,
        "flags": [True],
        "ratio": 0.5,
    }


def test_continuation_of_own_prefix_is_the_rest() -> None:
    full = base_answer("hello")
    prefix = "".join(split_chunks(full)[:3])
    rest = answer(SimRequest("hello", prefill=prefix)).text
    assert prefix + rest == full


def test_continuation_of_foreign_text_does_not_repeat_it() -> None:
    text = continuation(base_answer("hello"), "Paris is")
    assert text.startswith(" ")
    assert "Paris is" not in text
    assert continuation(base_answer("hello"), "Paris is ").startswith("and ")


@pytest.mark.parametrize("text", ["", "one", "a b", " lead and  double  spaces ", base_answer("x")])
def test_split_chunks_joins_back_and_has_at_most_8(text: str) -> None:
    pieces = split_chunks(text)
    assert "".join(pieces) == text
    assert 1 <= len(pieces) <= 8
    assert len(pieces) == min(8, max(1, count_tokens(text)))


def test_split_chunks_of_a_full_answer_is_8_even_pieces() -> None:
    pieces = split_chunks(base_answer("hello"))
    assert [count_tokens(p) for p in pieces] == [5] * 8
