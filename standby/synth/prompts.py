"""The generator's prompts. Seeds are shown as request/answer pairs; the model is asked for new
requests of the same kind that are not rewordings of the examples (rewordings would be removed
as near-duplicates anyway, wasting the call)."""

from __future__ import annotations

from collections.abc import Sequence

from standby.synth.sampling import Seed

SYSTEM = (
    "You write training data for a small assistant model: realistic requests a user might send, "
    "and the answers a careful, helpful expert assistant would give. Reply with JSON only."
)
_TARGETED = (
    "The model being trained answered the example requests poorly, so new data is needed "
    "where it is weak: exercise the same skills, formats and kinds of knowledge."
)


def _examples(seeds: Sequence[Seed], with_answers: bool) -> str:
    blocks = []
    for i, s in enumerate(seeds, 1):
        block = f"<example {i}>\nRequest: {s.instruction.strip()}\n"
        if with_answers:
            block += f"Answer: {s.response.strip()}\n"
        blocks.append(block + f"</example {i}>")
    return "\n\n".join(blocks)


def _ask(seeds: Sequence[Seed], n: int, topic: str | None, targeted: bool, what: str) -> str:
    about = f" about {topic}" if topic else ""
    noun = "request" if n == 1 else "requests"
    lines = [
        f"Here {'is an example' if len(seeds) == 1 else 'are examples'} of requests users sent "
        "to an assistant, with the answers they should get:",
        "",
        _examples(seeds, with_answers=True),
        "",
    ]
    if targeted:
        lines += [_TARGETED, ""]
    lines.append(
        f"Write {n} new {noun}{about} of a similar kind, length and difficulty{what}. Each must "
        "be self-contained, different from the examples and from each other (not a rewording), "
        "and must not copy any example's wording."
    )
    return "\n".join(lines)


def pairs_prompt(seeds: Sequence[Seed], n: int, topic: str | None, targeted: bool) -> str:
    """One-stage: new requests with their answers, as ``{"items": [{instruction, response}]}``."""
    return _ask(
        seeds, n, topic, targeted, ", each with the answer an expert assistant would give"
    ) + ('\nReply as {"items": [{"instruction": "...", "response": "..."}]}.')


def instructions_prompt(seeds: Sequence[Seed], n: int, topic: str | None, targeted: bool) -> str:
    """Two-stage, first stage: new requests only, as ``{"items": [{instruction}]}``."""
    return _ask(seeds, n, topic, targeted, "") + '\nReply as {"items": [{"instruction": "..."}]}.'
