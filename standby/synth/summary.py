"""What a synth run did, counted at every step: requested -> generated (items the model
returned) -> invalid -> duplicates -> contaminated -> judged out -> kept, and what it cost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Summary:
    run_id: str
    mode: str
    generator: str
    requested: int
    requests: int = 0
    failed_requests: int = 0
    generated: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    contaminated: Counter[str] = field(default_factory=Counter)
    judged_out: int = 0
    judge_failed: int = 0
    judge_scores: dict[str, int] = field(default_factory=dict)
    kept: int = 0
    seeds: int = 0
    targeted: bool = False
    reference_rows: int = 0
    test_prompts: int = 0
    cost: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    output: str = ""
    rows_in_output: int = 0
    content_hash: str = ""
    pushed: str | None = None
    judge: str = "off"

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "generator": self.generator,
            "targeted": self.targeted,
            "requested": self.requested,
            "requests": self.requests,
            "failed_requests": self.failed_requests,
            "generated": self.generated,
            "invalid": sum(self.invalid.values()),
            "invalid_by_reason": dict(sorted(self.invalid.items())),
            "duplicates": sum(self.duplicates.values()),
            "duplicates_by_kind": dict(sorted(self.duplicates.items())),
            "contaminated": sum(self.contaminated.values()),
            "contaminated_by_kind": dict(sorted(self.contaminated.items())),
            "judged_out": self.judged_out,
            "judge": self.judge,
            "judge_failed": self.judge_failed,
            "judge_scores": dict(sorted(self.judge_scores.items())),
            "kept": self.kept,
            "seeds": self.seeds,
            "reference_rows": self.reference_rows,
            "test_prompts": self.test_prompts,
            "calls": self.cost.get("calls", 0),
            "tokens": self.cost.get("total_tokens", 0),
            "cost": self.cost,
            "seconds": round(self.seconds, 3),
            "output": self.output,
            "rows_in_output": self.rows_in_output,
            "content_hash": self.content_hash,
            "pushed": self.pushed,
        }

    def one_line(self) -> str:
        d = self.as_dict()
        return (
            f"synth {self.run_id}: requested {d['requested']}, generated {d['generated']}, "
            f"invalid {d['invalid']}, duplicates {d['duplicates']}, contaminated "
            f"{d['contaminated']}, judged out {d['judged_out']}, kept {d['kept']} "
            f"({d['failed_requests']} failed requests); {d['calls']} calls, {d['tokens']} "
            f"tokens, {d['seconds']:.1f}s; {d['rows_in_output']} rows in {d['output']}"
            + (f"; pushed {d['pushed']}" if d["pushed"] else "")
        )
