"""The error tree's root and the one line a pydantic error becomes."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from standby import errors
from standby.errors import StandbyError, first_problem, validation_message


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int = Field(ge=1)


class Outer(BaseModel):
    name: str
    inner: Inner

    @field_validator("name")
    @classmethod
    def _no_spaces(cls, value: str) -> str:
        if " " in value:
            raise ValueError("no spaces")
        return value


def problem_of(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate(data)
    return caught.value


def test_the_old_root_name_still_catches_every_error() -> None:
    assert errors.GatewayError is StandbyError
    for name in ("ConfigError", "RequestError", "UpstreamError", "AllBackendsFailed"):
        assert issubclass(getattr(errors, name), StandbyError)


def test_one_line_names_the_path_and_counts_the_rest() -> None:
    err = problem_of({"name": "ok", "inner": {"port": 0, "extra": 1}})
    assert validation_message(err) == (
        "inner.port: Input should be greater than or equal to 1 (and 1 more problem)"
    )
    assert validation_message(err, "server").startswith("server.inner.port: ")


def test_value_errors_lose_pydantics_prefix() -> None:
    problem = first_problem(problem_of({"name": "a b", "inner": {"port": 1}}))
    assert (problem.loc, problem.msg, problem.type, problem.more) == (
        "name",
        "no spaces",
        "value_error",
        0,
    )
    assert problem.line() == "name: no spaces"


def test_a_problem_without_a_path_is_its_message() -> None:
    problem = first_problem(problem_of([]))
    assert problem.loc == ""
    assert problem.line() == problem.msg
