"""``standby pipeline once`` says why it did nothing: another worker's lease (whose, until
when), too soon after the last run, or too few new pairs — each its own line."""

from __future__ import annotations

import time
from pathlib import Path

from standby.pipeline.config import PipelineConfig
from standby.pipeline.controller import RUN_KEY, Controller
from standby.pipeline.lease import KEY as LEASE_KEY
from standby.store import open_state


def config(tmp_path: Path, **kw: object) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "bus": f"sqlite:///{tmp_path / 'events.db'}",
            "store": f"sqlite:///{tmp_path / 'pairs.db'}",
            "materialize": False,
            **kw,
        }
    )


async def test_another_workers_lease_is_named(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    async with open_state(cfg.bus) as state:
        held = {"holder": "host-b:42:abc123", "expires_at": time.time() + 60, "since": 0}
        await state.update(LEASE_KEY, lambda _: held)
        controller = Controller(cfg)
        assert await controller.once(state) is None
    assert controller.idle_reason is not None
    assert "worker host-b:42:abc123 holds the lease (expires in" in controller.idle_reason


async def test_too_few_new_pairs_and_too_soon_are_said_apart(tmp_path: Path) -> None:
    cfg = config(tmp_path, min_new_pairs=5, min_interval_s=3600)
    async with open_state(cfg.bus) as state:
        controller = Controller(cfg)
        assert await controller.once(state) is None
        assert controller.idle_reason == (
            "not due: 0 new or changed pairs since the last snapshot, min_new_pairs is 5 "
            "(or --force)"
        )
        last = {"id": "r1", "status": "done", "started_ts": time.time() - 60}
        await state.update(RUN_KEY, lambda _: last)
        assert await controller.once(state) is None
    assert controller.idle_reason is not None
    assert controller.idle_reason.startswith("not due: the last run started 60s ago")
