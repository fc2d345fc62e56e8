"""Tool-use scores of answer rows: names as sets, arguments equal as JSON, arguments valid
against the declared schema; a refused call is wrong; the gate checks the shares."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from standby.evaluator.config import GateSettings
from standby.evaluator.gate import decide
from standby.evaluator.tool_use import summarize, tool_scores
from tests.fixtures.tool_calls import TOOLS

DECLARED = orjson.dumps(TOOLS).decode()
PARIS = {"name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'}
TIME = {"name": "get_time", "arguments": '{"zone":"UTC"}'}


def row(target: list[dict[str, str]], made: list[dict[str, str]], **kw: Any) -> dict[str, Any]:
    return {"tools": DECLARED, "target_tool_calls": target, "candidate_tool_calls": made, **kw}


@pytest.mark.parametrize(
    ("target", "made", "error", "expected"),
    [
        # Same call, arguments spaced and ordered otherwise: equal as JSON.
        (
            [PARIS],
            [{**PARIS, "arguments": '{"unit": "celsius", "city": "Paris"}'}],
            None,
            (1, 1, 1),
        ),
        # Parallel calls in another order: names as sets, calls as a multiset.
        ([PARIS, TIME], [TIME, PARIS], None, (1, 1, 1)),
        # The right function with other (still valid) arguments.
        ([PARIS], [{**PARIS, "arguments": '{"city":"Lyon"}'}], None, (1, 0, 1)),
        # Arguments off the schema (an enum value not declared; a missing required key).
        ([PARIS], [{**PARIS, "arguments": '{"city":"Paris","unit":"kelvin"}'}], None, (1, 0, 0)),
        ([PARIS], [{**PARIS, "arguments": "{}"}], None, (1, 0, 0)),
        # A function that was not offered.
        ([PARIS], [{"name": "get_news", "arguments": "{}"}], None, (0, 0, 0)),
        # Text where a call was expected; no call where none was expected.
        ([PARIS], [], None, (0, None, None)),
        ([], [], None, (1, None, None)),
        ([], [PARIS], None, (0, None, 1)),
        # The backend refused the model's call: wrong on every count that applies.
        ([PARIS], [], "arguments are not valid JSON", (0, 0, 0)),
    ],
)
def test_scores(
    target: list[dict[str, str]],
    made: list[dict[str, str]],
    error: str | None,
    expected: tuple[float | None, ...],
) -> None:
    scores = tool_scores(row(target, made, tool_error=error))
    assert (
        scores["tool_name_match"],
        scores["tool_args_match"],
        scores["tool_args_valid"],
    ) == expected


def test_a_row_without_tools_has_no_tool_scores() -> None:
    assert set(tool_scores({"tools": None}).values()) == {None}
    assert summarize([{"tools": None}]) is None


def test_the_gate_checks_the_tool_scores_of_rows_with_tools() -> None:
    judged = {"similarity_scores": [95.0], "precision_scores": [95.0], "instructions": "q"}
    rows = [
        {**judged, "sample_id": f"s{i}", **r, **tool_scores(r)}
        for i, r in enumerate([row([PARIS], [PARIS]), row([PARIS], [TIME])])
    ]
    decision = decide(rows, None, GateSettings(avg_similarity_threshold=50))
    assert not decision["passed"]
    assert "tool_name_match 0.50 < threshold 0.9" in decision["reasons"]
    assert decision["tool_use"]["tool_args_valid"] == {
        "mean": 1.0,
        "threshold": 0.95,
        "passed": True,
    }
    relaxed = GateSettings(
        avg_similarity_threshold=50,
        avg_precision_threshold=50,
        min_tool_name_accuracy=0.5,
        min_tool_args_accuracy=0.5,
    )
    assert decide(rows, None, relaxed)["passed"]
    plain = [{**judged, "sample_id": "s"}]
    assert "tool_use" not in decide(plain, None, relaxed)
