"""Calling the generator: one request per planned group of seeds, ``gen_workers`` at a time
(the service-LLM client paces them to ``rate_limit_per_minute`` and retries with backoff).

- one-stage: one call returns new instructions with their answers;
- two-stage: one call returns new instructions, then each is answered by its own call, exactly
  as a user's request would be (no examples, no system text), which keeps answers independent
  of the few-shot context.

Every item is validated; invalid ones are skipped and counted by reason. A request whose
answer stays unusable (retries or re-asks exhausted) is counted as failed; the run goes on.
Items come back in plan order (request, then position), whatever order the calls finished in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from standby.service_llm import ServiceLLM, ServiceLLMUnavailable
from standby.synth.config import SynthConfig
from standby.synth.prompts import SYSTEM, instructions_prompt, pairs_prompt
from standby.synth.sampling import Seed
from standby.synth.validate import (
    InstructionBatch,
    Item,
    PairBatch,
    check_instruction,
    check_pair,
    check_response,
)

log = logging.getLogger("standby.synth")


@dataclass
class Generated:
    items: list[Item] = field(default_factory=list)
    returned: int = 0  # items in usable answers, valid or not
    invalid: Counter[str] = field(default_factory=Counter)
    failed_requests: int = 0


@dataclass
class _Outcome:
    items: list[Item] = field(default_factory=list)
    returned: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    failed: bool = False


async def _one_stage(
    llm: ServiceLLM, cfg: SynthConfig, i: int, seeds: tuple[Seed, ...], targeted: bool
) -> _Outcome:
    out = _Outcome()
    prompt = pairs_prompt(seeds, cfg.items_per_request, cfg.topic, targeted)
    result = await llm.generate_json(prompt, PairBatch, system=SYSTEM, name="synthetic_pairs")
    if result.value is None:
        log.warning("request %d: no usable answer: %s", i, result.error)
        out.failed = True
        return out
    out.returned = len(result.value.items)
    for j, raw in enumerate(result.value.items):
        pair, why = check_pair(raw, cfg)
        if pair is None:
            out.invalid[why or "invalid"] += 1
            continue
        out.items.append(Item(pair[0], pair[1], i, j, seeds))
    return out


async def _two_stage(
    llm: ServiceLLM, cfg: SynthConfig, i: int, seeds: tuple[Seed, ...], targeted: bool
) -> _Outcome:
    out = _Outcome()
    prompt = instructions_prompt(seeds, cfg.items_per_request, cfg.topic, targeted)
    result = await llm.generate_json(
        prompt, InstructionBatch, system=SYSTEM, name="synthetic_instructions"
    )
    if result.value is None:
        log.warning("request %d: no usable answer: %s", i, result.error)
        out.failed = True
        return out
    out.returned = len(result.value.items)
    instructions: list[tuple[int, str]] = []
    for j, raw in enumerate(result.value.items):
        text, why = check_instruction(raw, cfg)
        if text is None:
            out.invalid[why or "invalid"] += 1
        else:
            instructions.append((j, text))

    async def answer(j: int, instruction: str) -> None:
        try:
            completion = await llm.complete(instruction)
        except ServiceLLMUnavailable as e:
            log.warning("request %d item %d: no answer: %s", i, j, e)
            out.invalid["no answer"] += 1
            return
        text = completion.text.strip()
        why = check_response(text, cfg)
        if why is None and completion.finish_reason == "length":
            why = "response cut at the token limit"
        if why is not None:
            out.invalid[why] += 1
            return
        out.items.append(Item(instruction, text, i, j, seeds))

    await asyncio.gather(*(answer(j, text) for j, text in instructions))
    out.items.sort(key=lambda item: item.index)
    return out


async def generate(
    llm: ServiceLLM,
    cfg: SynthConfig,
    plan: Sequence[tuple[Seed, ...]],
    *,
    targeted: bool = False,
    on_done: Callable[[int], None] = lambda n: None,
) -> Generated:
    """Run every planned request with ``cfg.gen_workers`` workers; ``on_done`` gets the number
    of valid items of each finished request (for a progress bar)."""
    call = _two_stage if cfg.mode == "two-stage" else _one_stage
    outcomes: list[_Outcome | None] = [None] * len(plan)
    queue = iter(range(len(plan)))

    async def worker() -> None:
        for i in queue:  # a shared iterator: each index is taken by exactly one worker
            outcome = await call(llm, cfg, i, plan[i], targeted)
            outcomes[i] = outcome
            on_done(len(outcome.items))

    workers = [asyncio.create_task(worker()) for _ in range(min(cfg.gen_workers, len(plan)))]
    try:
        await asyncio.gather(*workers)
    finally:  # one worker failed for good (bad key): stop the others
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    done = Generated()
    for outcome in outcomes:
        assert outcome is not None
        done.items += outcome.items
        done.returned += outcome.returned
        done.invalid.update(outcome.invalid)
        done.failed_requests += outcome.failed
    return done
