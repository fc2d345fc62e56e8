"""The serving model's online score: sampled answers the fallback gave in production are judged
against the primary's own answer to the same prompt (from the pair store), and when the running
mean falls below the gate's thresholds the registry rolls back to the version served before
(``model.rolled_back`` on the bus, ``standby_pipeline_runs_total{stage="online_check",
outcome="rolled_back"}`` for the alert).

Only single-turn, complete fallback answers of the serving version are eligible (the gateway
records the adapter that answered as ``model_version``); sampling is by a hash of the event id,
so a redelivered event is sampled the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from standby.config import DataConfig
from standby.data.pairs import DataError, PairStore, prompt_id_of
from standby.data.sources import instruction_and_target
from standby.errors import StandbyError
from standby.pipeline.config import PipelineConfig
from standby.store import Bus, InferenceCompleted
from standby.store.promotion import rollback
from standby.store.registry import ModelVersion, Registry
from standby.store.state import StateStore

log = logging.getLogger("standby.pipeline.online")

TOPIC = "inference.completed"
GROUP = "online-check"
CRITERIA = ("similarity", "precision")


def sampled(event_id: str, rate: float) -> bool:
    digest = hashlib.sha256(event_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def served_by(version: ModelVersion) -> str:
    """How the gateway's local backend names this version in ``model_version``."""
    rev = version.adapter_revision
    return f"{version.adapter}@{rev}" if rev else version.adapter


class OnlineCheck:
    def __init__(self, config: PipelineConfig, state: StateStore, bus: Bus, metrics: Any) -> None:
        self.config = config
        self.state = state
        self.bus = bus
        self.metrics = metrics
        self.registry = Registry(state)
        self.thresholds = {
            c: float(config.evaluate.get(f"avg_{c}_threshold", 90.0)) for c in CRITERIA
        }

    async def step(self, judge: Any, store: PairStore, block_s: float = 0.0) -> int:
        """One batch of events: judge the sampled eligible ones, maybe roll back. Returns how
        many were judged."""
        batch = await self.bus.consume(TOPIC, GROUP, "online", count=100, block_s=block_s)
        if not batch:
            return 0
        serving = await self.registry.serving(self.config.backend)
        judged = 0
        for delivery in await self.bus.unseen(GROUP, batch):
            pair = self._eligible(delivery.event, serving, store)
            if pair is None or serving is None:
                continue
            instruction, target, candidate = pair
            outcome = await judge.judge(instruction, target, candidate, 0)
            if outcome.judgement is None:
                continue
            scores = {
                "similarity": outcome.judgement.similarity_assessment.score,
                "precision": outcome.judgement.precision_assessment.score,
            }
            await self._record(serving, scores)
            judged += 1
        await self.bus.mark_seen(GROUP, [d.event.id for d in batch])
        await self.bus.ack(TOPIC, GROUP, [d.id for d in batch])
        if serving is not None and judged:
            await self._maybe_roll_back(serving)
        return judged

    def _eligible(
        self, event: Any, serving: ModelVersion | None, store: PairStore
    ) -> tuple[str, str, str] | None:
        if serving is None or not isinstance(event, InferenceCompleted):
            return None
        d = event.data
        if (
            d.provenance != "fallback"
            or d.backend != self.config.backend
            or d.finish_reason != "stop"
            or d.model_version != served_by(serving)
            or not sampled(event.id, self.config.online_sample_rate)
        ):
            return None
        users = [m.content for m in d.messages if m.role == "user"]
        if len(users) != 1 or any(m.role == "assistant" for m in d.messages):
            return None
        system = tuple(m.content for m in d.messages if m.role == "system")
        pair = store.get(prompt_id_of(users[0], system))
        if pair is None:
            return None  # no primary answer to compare with
        try:
            instruction, target = instruction_and_target(pair.messages)
        except DataError:
            return None
        return instruction, target, d.response

    async def _record(self, version: ModelVersion, scores: dict[str, float]) -> None:
        window = self.config.online_window

        def add(doc: dict[str, Any] | None) -> dict[str, Any]:
            recent = [*(doc or {}).get("recent", []), scores][-window:]
            return {"version": version.version, "recent": recent}

        doc = await self.state.update(f"pipeline:online:{version.version}", add)
        for c in CRITERIA:
            mean = sum(s[c] for s in doc["recent"]) / len(doc["recent"])
            self.metrics.online_score.labels(c).set(mean)
        self.metrics.online_samples.set(len(doc["recent"]))

    async def _maybe_roll_back(self, version: ModelVersion) -> None:
        doc = await self.state.get(f"pipeline:online:{version.version}") or {}
        recent = doc.get("recent", [])
        if len(recent) < self.config.online_min_samples:
            return
        means = {c: sum(s[c] for s in recent) / len(recent) for c in CRITERIA}
        low = [
            f"{c} {means[c]:.1f} < {self.thresholds[c]:g}"
            for c in CRITERIA
            if means[c] < self.thresholds[c]
        ]
        if not low:
            return
        reason = f"online score over {len(recent)} answers: {', '.join(low)}"
        try:
            done = await rollback(self.registry, self.bus, self.config.backend, reason)
        except StandbyError as e:  # nothing to roll back to: say so, keep serving
            log.error("online check: %s is below the gate (%s) but %s", version.version, reason, e)
            self.metrics.runs.labels("online_check", "below_gate").inc()
            return
        log.error(
            "online check: rolled back %s -> %s: %s", version.version, done.serving.version, reason
        )
        self.metrics.runs.labels("online_check", "rolled_back").inc()

    async def run(self, stop: asyncio.Event) -> None:
        from standby.evaluator.config import EvaluateConfig
        from standby.evaluator.judge import Judge, load_template
        from standby.service_llm import ServiceLLM

        settings = EvaluateConfig.model_validate(
            {**self.config.evaluate, "lm_response_ds_id": "online", "gate": False}
        )
        template = load_template(settings.prompt_tmpl_path)
        with PairStore.from_config(DataConfig(store=self.config.store)) as store:
            async with ServiceLLM(settings, concurrency=1) as llm:
                judge = Judge(llm, template)
                while not stop.is_set():
                    try:
                        await self.step(judge, store, block_s=1.0)
                    except StandbyError as e:
                        log.warning("online check: %s", e)
                        await asyncio.sleep(self.config.poll_s)
