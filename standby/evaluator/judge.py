"""The judge: the service LLM scores one (instruction, target, candidate) for similarity to the
target and precision in answering the instruction, 1-100 each with a reason.

Structured output (the JSON schema of :class:`Judgement`), temperature 0, a prompt template
file users can replace (placeholders ``{instruction}``, ``{target_response}``,
``{candidate_response}``; other braces are left alone). An answer outside the schema (a score
of 0 or 150, a missing reason, no JSON) is asked again by the client and, past its re-asks,
recorded as a failed judgement: the run goes on.

Judgements are cached in SQLite by (judge model, template hash, instruction, target, candidate,
repeat index): re-running an evaluation costs nothing for rows that did not change.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from standby.errors import ConfigError
from standby.service_llm import ServiceLLM
from standby.store import sqlite

PLACEHOLDERS = ("{instruction}", "{target_response}", "{candidate_response}")
# A judge that is not a model (standby's simulated Gemini, ``standby.sim.judge``) begins every
# reason with this; the evaluation's report and summary then say the judge was simulated.
SIMULATED_JUDGE = "simulated judge"


def is_simulated(reasons: list[str]) -> bool:
    """True when judge ``reasons`` come from the simulated judge."""
    return bool(reasons) and all(r.startswith(SIMULATED_JUDGE) for r in reasons)


def judge_label(judge: Mapping[str, Any]) -> str:
    """The judge of a report (its ``judge`` section) as people read it: ``simulated judge
    (...)`` when the simulator judged, else the model."""
    model = str(judge.get("model"))
    return f"simulated judge ({model} is standby's simulator)" if judge.get("simulated") else model


class Assessment(BaseModel):
    """One criterion's score and why."""

    model_config = ConfigDict(extra="ignore")

    score: Annotated[float, Field(ge=1, le=100, description="1 (worst) to 100 (best)")]
    reason: str = Field(description="Why, in a sentence or two")

    @field_validator("reason")
    @classmethod
    def _says_why(cls, reason: str) -> str:
        # Checked here, not in the schema: minLength is outside what every provider accepts.
        if not reason.strip():
            raise ValueError("the reason is empty")
        return reason


class Judgement(BaseModel):
    """Scores of a candidate answer: similarity to the reference answer and precision in
    answering the instruction."""

    model_config = ConfigDict(extra="ignore")

    similarity_assessment: Assessment
    precision_assessment: Assessment


def load_template(path: Path | None) -> str:
    """The prompt template: ``path``, or the packaged ``prompts/judge.txt``."""
    if path is None:
        return resources.files("standby.evaluator").joinpath("prompts/judge.txt").read_text("utf-8")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"--prompt-tmpl-path {path}: cannot read: {e.strerror or e}") from None
    missing = [p for p in PLACEHOLDERS if p not in text]
    if missing:
        raise ConfigError(f"--prompt-tmpl-path {path}: missing placeholder {', '.join(missing)}")
    return text


_PLACEHOLDER = re.compile(r"\{(instruction|target_response|candidate_response)\}")


def render(template: str, instruction: str, target: str, candidate: str) -> str:
    """The template with its placeholders filled in one pass: not ``str.format`` (templates
    show JSON examples with braces), and a placeholder typed inside an answer stays text."""
    values = {
        "instruction": instruction,
        "target_response": target,
        "candidate_response": candidate,
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class Outcome:
    """One judgement or why there is none; ``cached`` when it cost no call."""

    judgement: Judgement | None
    error: str | None
    cached: bool
    judged_at: str
    evaluator: str


class JudgeCache:
    """Judgements by key in one SQLite file (WAL; one connection, used from one thread)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS judgements (key TEXT PRIMARY KEY, judgement TEXT NOT "
            "NULL, evaluator TEXT NOT NULL, judged_at TEXT NOT NULL)"
        )
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[Judgement, str, str] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT judgement, evaluator, judged_at FROM judgements WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        return Judgement.model_validate_json(row[0]), row[1], row[2]

    def put(self, key: str, judgement: Judgement, evaluator: str, judged_at: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO judgements VALUES (?, ?, ?, ?)",
                (key, judgement.model_dump_json(), evaluator, judged_at),
            )

    def close(self) -> None:
        self._db.close()


class Judge:
    """Scores answers with the service LLM; see the module doc."""

    def __init__(self, llm: ServiceLLM, template: str, cache: JudgeCache | None = None) -> None:
        self.llm = llm
        self.template = template
        self.template_hash = hashlib.sha256(template.encode()).hexdigest()
        self.cache = cache
        self.cache_hits = 0

    def key(self, instruction: str, target: str, candidate: str, repeat: int) -> str:
        h = hashlib.sha256()
        for part in (self.llm.model_id, self.template_hash, instruction, target, candidate):
            h.update(part.encode())
            h.update(b"\0")
        h.update(str(repeat).encode())
        return h.hexdigest()

    async def judge(self, instruction: str, target: str, candidate: str, repeat: int) -> Outcome:
        key = self.key(instruction, target, candidate, repeat)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.cache_hits += 1
            return Outcome(hit[0], None, True, hit[2], hit[1])
        result = await self.llm.generate_json(
            render(self.template, instruction, target, candidate),
            Judgement,
            temperature=0.0,
            name="judgement",
        )
        now = datetime.now(UTC).isoformat(timespec="seconds")
        if result.value is None:
            return Outcome(None, result.error, False, now, self.llm.model_id)
        if self.cache is not None:
            self.cache.put(key, result.value, self.llm.model_id, now)
        return Outcome(result.value, None, False, now, self.llm.model_id)
