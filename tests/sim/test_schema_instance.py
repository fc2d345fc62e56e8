"""The simulators' schema-instance writer (standby.sim.schema_instance): what it writes
validates against the schema (jsonschema, with format checks) and parses as the Pydantic model
the schema came from, the same value every time."""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import Annotated, Any, Literal

import jsonschema
import orjson
import pytest
from pydantic import BaseModel, Field

from standby.sim.schema_instance import instance_of, json_answer


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    zip_code: Annotated[str, Field(min_length=5, max_length=5)]


class Person(BaseModel):
    name: Annotated[str, Field(max_length=4)]
    age: Annotated[int, Field(gt=0, lt=150, multiple_of=7)]
    score: Annotated[float, Field(ge=0, le=1)]
    ratio: Annotated[float, Field(gt=0, lt=1)]
    tags: Annotated[list[str], Field(min_length=2, max_length=3)]
    none_allowed: Annotated[list[int], Field(max_length=0)]
    pair: tuple[int, str]
    home: Address
    past: list[Address]
    nickname: str | None
    colour: Colour
    mood: Literal["calm", "busy"]
    born: datetime.date
    seen: datetime.datetime
    wait: datetime.timedelta
    id: uuid.UUID
    extra: dict[str, int]


SCHEMAS: dict[str, dict[str, Any]] = {
    "pydantic": Person.model_json_schema(),
    "openai-strict": {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
                    "required": ["explanation", "output"],
                    "additionalProperties": False,
                },
            },
            "final_answer": {"type": ["string", "null"]},
        },
        "required": ["steps", "final_answer"],
        "additionalProperties": False,
    },
    "all-of": {
        "allOf": [
            {"$ref": "#/$defs/Base"},
            {"type": "object", "properties": {"more": {"type": "boolean"}}, "required": ["more"]},
        ],
        "$defs": {
            "Base": {
                "type": "object",
                "properties": {"n": {"type": "integer", "exclusiveMinimum": 3}},
                "required": ["n"],
            }
        },
    },
    "number-multiple": {"type": "number", "minimum": 1, "maximum": 10, "multipleOf": 4},
}


@pytest.mark.parametrize("name", SCHEMAS)
def test_the_instance_validates(name: str) -> None:
    schema = SCHEMAS[name]
    value = instance_of(schema, "simulated")
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
    assert instance_of(schema, "simulated") == value  # deterministic


def test_the_instance_parses_as_the_pydantic_model() -> None:
    person = Person.model_validate_json(json_answer(Person.model_json_schema(), "Ann Lee"))
    assert person.name == "Ann "  # cut to max_length
    assert person.age % 7 == 0 and 0 < person.age < 150
    assert len(person.tags) == 2 and person.none_allowed == []
    assert person.home.zip_code == "Ann L"
    assert person.nickname == "Ann Lee"  # the non-null option of the union


def test_gemini_upper_case_types() -> None:
    schema = {
        "type": "OBJECT",
        "properties": {"n": {"type": "NUMBER", "maximum": 2.5}, "s": {"type": "STRING"}},
    }
    assert instance_of(schema, "x") == {"n": 2.5, "s": "x"}


def test_json_object_answer_is_the_text_under_answer() -> None:
    assert orjson.loads(json_answer(None, "hi")) == {"answer": "hi"}
