"""The model registry on SQLite and real Redis: register, promote (the old one retires),
reject, roll back (the one before serves again), and the errors a user can run into."""

from __future__ import annotations

import pytest

from standby.store.registry import ModelVersion, Registry, RegistryError


def version(v: str, backend: str = "gemma") -> ModelVersion:
    return ModelVersion(
        version=v,
        backend=backend,
        adapter=f"/adapters/{v}",
        base_model="google/gemma-3-1b-it",
        scores={"similarity": 90.0},
    )


async def test_register_promote_retire_and_roll_back(registry: Registry) -> None:
    for v in ("v1", "v2", "v3"):
        assert (await registry.register(version(v))).status == "candidate"
    await registry.register(version("o1", backend="other"))
    assert await registry.serving("gemma") is None

    first = await registry.promote("v1")
    assert first.serving.status == "serving" and first.previous is None
    second = await registry.promote("v2")
    assert second.previous is not None and second.previous.version == "v1"
    assert second.previous.status == "retired"
    assert (await registry.serving("gemma")).version == "v2"  # type: ignore[union-attr]
    assert await registry.serving("other") is None

    back = await registry.rollback("gemma", "online score 71 below the gate")
    assert back.serving.version == "v1" and back.serving.status == "serving"
    assert back.previous is not None and back.previous.version == "v2"
    bad = await registry.get("v2")
    assert bad.status == "rejected" and bad.reasons == ["online score 71 below the gate"]
    with pytest.raises(RegistryError, match="no earlier version"):
        await registry.rollback("gemma", "again")

    rejected = await registry.reject("v3", ["similarity 80.0 < 90"])
    assert rejected.status == "rejected"
    statuses = {v.version: v.status for v in await registry.versions("gemma")}
    assert statuses == {"v1": "serving", "v2": "rejected", "v3": "rejected"}
    assert [v.version for v in await registry.versions()] == ["v1", "v2", "v3", "o1"]


async def test_update_records_scores_but_not_status(registry: Registry) -> None:
    await registry.register(version("v1"))
    updated = await registry.update("v1", scores={"similarity": 93.5, "precision": 91.0})
    assert updated.scores == {"similarity": 93.5, "precision": 91.0}
    with pytest.raises(ValueError, match="promote / reject / rollback"):
        await registry.update("v1", status="serving")


async def test_user_errors(registry: Registry) -> None:
    await registry.register(version("v1"))
    with pytest.raises(RegistryError, match="already registered"):
        await registry.register(version("v1"))
    with pytest.raises(RegistryError, match="no model version 'v9'"):
        await registry.promote("v9")
    await registry.promote("v1")
    with pytest.raises(RegistryError, match="already serving"):
        await registry.promote("v1")
    with pytest.raises(RegistryError, match="is serving: roll it back"):
        await registry.reject("v1", ["no"])
