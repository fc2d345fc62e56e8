"""What the generator is asked for (JSON schemas) and the check of every returned item.

The answer's envelope is read leniently (``items`` may hold anything) while the schema sent to
the model describes a proper item: one bad item then costs only itself, skipped and counted by
reason, instead of failing (and re-asking) the whole answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from pydantic.config import JsonDict

from standby.synth.config import SynthConfig
from standby.synth.sampling import Seed

# No minLength / minItems: not every provider's structured output accepts them (empty texts
# are caught per item below anyway).
_REQUEST: JsonDict = {"type": "string", "description": "The new request, self-contained"}
_ANSWER: JsonDict = {"type": "string", "description": "The expert assistant's answer to it"}
PAIR_SCHEMA: JsonDict = {
    "type": "object",
    "properties": {"instruction": _REQUEST, "response": _ANSWER},
    "required": ["instruction", "response"],
}
INSTRUCTION_SCHEMA: JsonDict = {
    "type": "object",
    "properties": {"instruction": _REQUEST},
    "required": ["instruction"],
}


class PairBatch(BaseModel):
    """One-stage answer: new instructions with their answers."""

    items: list[Any] = Field(json_schema_extra={"items": PAIR_SCHEMA})


class InstructionBatch(BaseModel):
    """Two-stage, first stage: new instructions only."""

    items: list[Any] = Field(json_schema_extra={"items": INSTRUCTION_SCHEMA})


@dataclass(frozen=True)
class Item:
    """A generated pair that passed validation, and the request it came from."""

    instruction: str
    response: str
    request: int
    index: int
    seeds: tuple[Seed, ...]


def _text(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value.strip() if isinstance(value, str) else None


def check_instruction(raw: Any, cfg: SynthConfig) -> tuple[str | None, str | None]:
    """(instruction, None) or (None, why it is invalid)."""
    if not isinstance(raw, dict):
        return None, "not an object"
    text = _text(raw, "instruction")
    if text is None:
        return None, "no instruction"
    if len(text) < cfg.min_instruction_chars:
        return None, "instruction too short" if text else "empty instruction"
    if len(text) > cfg.max_instruction_chars:
        return None, "instruction too long"
    return text, None


def check_response(text: str | None, cfg: SynthConfig) -> str | None:
    """Why the answer is invalid, or None."""
    if text is None:
        return "no response"
    if not text:
        return "empty response"
    if len(text) < cfg.min_response_chars:
        return "response too short"
    if len(text) > cfg.max_response_chars:
        return "response too long"
    return None


def check_pair(raw: Any, cfg: SynthConfig) -> tuple[tuple[str, str] | None, str | None]:
    """((instruction, response), None) or (None, why the item is invalid)."""
    instruction, why = check_instruction(raw, cfg)
    if instruction is None:
        return None, why
    response = _text(raw, "response")
    why = check_response(response, cfg)
    if why is not None or response is None:
        return None, why
    return (instruction, response), None
