"""Promotion and rollback with their events: the registry changes, then ``model.promoted`` /
``model.rolled_back`` goes on the bus (gateways follow the registry itself, so an event lost
between the two changes nothing they serve; the event is the record for people and alerts)."""

from __future__ import annotations

from typing import Final

from standby.store import Bus, PipelineEvent
from standby.store.registry import Promotion, Registry

SOURCE = "standby/pipeline"
PROMOTED: Final = "model.promoted"
ROLLED_BACK: Final = "model.rolled_back"


def _data(p: Promotion, **extra: object) -> dict[str, object]:
    s = p.serving
    return {
        "version": s.version,
        "backend": s.backend,
        "adapter": s.adapter,
        "adapter_revision": s.adapter_revision,
        "base_model": s.base_model,
        "scores": s.scores,
        "previous": p.previous.version if p.previous else None,
        **extra,
    }


async def promote(registry: Registry, bus: Bus | None, version: str) -> Promotion:
    done = await registry.promote(version)
    if bus is not None:
        event = PipelineEvent(type=PROMOTED, source=SOURCE, data=_data(done))
        await bus.publish(PROMOTED, event)
    return done


async def rollback(registry: Registry, bus: Bus | None, backend: str, reason: str) -> Promotion:
    done = await registry.rollback(backend, reason)
    if bus is not None:
        event = PipelineEvent(type=ROLLED_BACK, source=SOURCE, data=_data(done, reason=reason))
        await bus.publish(ROLLED_BACK, event)
    return done
