"""Tool use in batch inference and evaluation: rows with tools are answered with the tools
offered, and their calls are scored beside the judge.

Batch inference: a test row with tools (``data/tool_pairs.py``) is asked with its whole
context (the question, earlier calls and their results) and its tools; its answer row keeps
``tools``, ``target_tool_calls`` and ``candidate_tool_calls`` (``{name, arguments}`` each), and
an answer of calls is written out as text (``name(arguments)``) in the response columns, so
the judge and ROUGE/chrF see it too. A call the backend refused (invalid JSON, an unknown
function, arguments off the schema: the local backend's ``UpstreamProtocolError``) is recorded
in ``tool_error`` and scored as wrong, not retried.

Scores per tool row (``tool_scores``), 0 or 1 each, None where they do not apply:

- ``tool_name_match``: the functions called are the expected ones (as sets, for parallel
  calls; no call where none was expected counts as right);
- ``tool_args_match``: where calls were expected and made, the calls' arguments equal the
  target's as JSON (parsed and compared as objects, per function);
- ``tool_args_valid``: where calls were made, every call names an offered function and its
  arguments are valid against that function's JSON Schema (``jsonschema``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from standby.data.tool_pairs import call_dicts, calls_of, calls_text, messages_of, tools_of
from standby.protocol import Completion, Message
from standby.tool_calls import Tool

TOOL_COLUMNS = ("tools", "target_tool_calls", "candidate_tool_calls", "tool_error")
SCORES = ("tool_name_match", "tool_args_match", "tool_args_valid")


@dataclass(frozen=True)
class ToolContext:
    """What a tool row is asked with, and the calls its target made."""

    messages: tuple[Message, ...]
    tools: tuple[Tool, ...]
    target_calls: tuple[dict[str, str], ...]

    def tools_json(self) -> str:
        return orjson.dumps([t.openai() for t in self.tools]).decode()


def tool_context(turns: Sequence[Mapping[str, Any]], tools: Any) -> tuple[str, str, ToolContext]:
    """(instruction, target text, context) of a tool row: the first user message, the last
    assistant answer (its calls written out when it has calls) and what comes before it."""
    messages = messages_of(turns)
    last = max(i for i, m in enumerate(messages) if m.role == "assistant")
    answer = messages[last]
    calls = tuple(call_dicts(calls_of(turns[last])))
    instruction = next(m.content for m in messages if m.role == "user")
    target = answer.content or calls_text(calls)
    return instruction, target, ToolContext(messages[:last], tools_of(tools), calls)


def answer_record(
    context: ToolContext, answer: Completion | None, error: str | None
) -> dict[str, Any]:
    """The tool columns of an answer row (``answer`` None: the backend refused the call)."""
    calls = call_dicts(answer.tool_calls) if answer is not None else []
    return {
        "tools": context.tools_json(),
        "target_tool_calls": list(context.target_calls),
        "candidate_tool_calls": calls,
        "tool_error": error,
    }


def candidate_text(answer: Completion) -> str:
    return answer.text or calls_text(call_dicts(answer.tool_calls))


def _args(text: str) -> Any:
    try:
        return orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return None


def _valid(call: Mapping[str, str], schemas: Mapping[str, Any]) -> bool:
    """The call's arguments match its function's schema, by the rule the local backend
    applies when it serves a call (an invalid declared schema makes no call valid)."""
    from standby.providers.local_tools import schema_problem

    if call["name"] not in schemas:
        return False
    args = _args(call["arguments"])
    if not isinstance(args, dict):
        return False
    return schema_problem(Tool(call["name"], parameters=schemas[call["name"]]), args) is None


def _call_key(call: Mapping[str, str]) -> tuple[str, bytes]:
    return call["name"], orjson.dumps(_args(call["arguments"]), option=orjson.OPT_SORT_KEYS)


def tool_scores(row: Mapping[str, Any]) -> dict[str, float | None]:
    """The tool-use scores of an answer row (all None for a row without tools)."""
    if not row.get("tools"):
        return dict.fromkeys(SCORES)
    refused = bool(row.get("tool_error"))
    target = list(row.get("target_tool_calls") or [])
    made = [] if refused else list(row.get("candidate_tool_calls") or [])
    names = not refused and {c["name"] for c in made} == {c["name"] for c in target}
    matched: float | None = None
    if target and (made or refused):
        matched = float(Counter(map(_call_key, made)) == Counter(map(_call_key, target)))
    valid: float | None = None
    if made or refused:
        schemas = {t.name: t.parameters for t in tools_of(row["tools"])}
        valid = float(bool(made) and all(_valid(c, schemas) for c in made))
    return {"tool_name_match": float(names), "tool_args_match": matched, "tool_args_valid": valid}


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The tool-use table of a report: per score, its mean over the rows it applies to (None
    when no row has tools)."""
    tool_rows = [r for r in rows if r.get("tools")]
    if not tool_rows:
        return None
    out: dict[str, Any] = {"rows": len(tool_rows)}
    for score in SCORES:
        values = [float(r[score]) for r in tool_rows if r.get(score) is not None]
        out[score] = {
            "n": len(values),
            "mean": round(sum(values) / len(values), 4) if values else None,
        }
    return out


def markdown(summary: Mapping[str, Any] | None) -> list[str]:
    """The report's tool-use section (nothing when no row has tools)."""
    if summary is None:
        return []
    lines = [
        "",
        "## Tool use",
        "",
        f"{summary['rows']} rows offered tools.",
        "",
        "| score | mean | n |",
        "|---|---|---|",
    ]
    for score in SCORES:
        s = summary[score]
        mean = "n/a" if s["mean"] is None else f"{s['mean']:.3f}"
        lines.append(f"| {score.removeprefix('tool_')} | {mean} | {s['n']} |")
    return lines
