"""The model registry: every trained adapter version of a fallback backend, its scores and its
status, and which version serves. Kept in the bus's state store (one document, updated
atomically), so the pipeline worker, ``standby models`` and every gateway replica agree.

Status: ``candidate`` (trained, not yet judged or not yet promoted) -> ``serving`` (one per
backend) -> ``retired`` (replaced by a newer one); ``rejected`` (failed the gate, or rolled
back). Promotion keeps a per-backend history, so ``rollback`` restores the version served before.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from standby.errors import StandbyError
from standby.store.state import StateStore

Status = Literal["candidate", "serving", "rejected", "retired"]
KEY = "registry"


class RegistryError(StandbyError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ModelVersion(BaseModel):
    """One adapter version of the model behind a gateway backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, max_length=128)
    backend: str = Field(min_length=1, description="The gateway backend it is for (gemma).")
    adapter: str = Field(min_length=1, description="Adapter folder or Hub id.")
    adapter_revision: str | None = None
    base_model: str | None = None
    status: Status = "candidate"
    scores: dict[str, float] = Field(default_factory=dict)
    dataset: dict[str, Any] = Field(default_factory=dict)
    evaluation: str | None = Field(
        default=None, description="Its evaluation folder (eval rows): the gate's baseline."
    )
    run_id: str | None = None
    reasons: list[str] = Field(default_factory=list)
    created_at: str = Field(default_factory=_now)
    updated_at: str = Field(default_factory=_now)


class Promotion(BaseModel):
    """What a promotion or rollback changed: the version now serving and the one it replaced."""

    model_config = ConfigDict(frozen=True)

    serving: ModelVersion
    previous: ModelVersion | None


def _empty() -> dict[str, Any]:
    return {"versions": {}, "serving": {}, "history": {}}


class Registry:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    async def _doc(self) -> dict[str, Any]:
        return await self.state.get(KEY) or _empty()

    async def get(self, version: str) -> ModelVersion:
        raw = (await self._doc())["versions"].get(version)
        if raw is None:
            raise RegistryError(f"no model version {version!r} in the registry")
        return ModelVersion.model_validate(raw)

    async def versions(self, backend: str | None = None) -> list[ModelVersion]:
        """Every version (of ``backend``) in the order they were registered."""
        doc = await self._doc()
        versions = (ModelVersion.model_validate(v) for v in doc["versions"].values())
        return [v for v in versions if backend in (None, v.backend)]

    async def serving(self, backend: str) -> ModelVersion | None:
        doc = await self._doc()
        version = doc["serving"].get(backend)
        return ModelVersion.model_validate(doc["versions"][version]) if version else None

    async def register(self, model: ModelVersion) -> ModelVersion:
        """Add a new version as a candidate; a version id is never reused."""

        def add(doc: dict[str, Any] | None) -> dict[str, Any]:
            doc = doc or _empty()
            if model.version in doc["versions"]:
                raise RegistryError(f"model version {model.version!r} is already registered")
            doc["versions"][model.version] = model.model_copy(
                update={"status": "candidate"}
            ).model_dump(mode="json")
            return doc

        doc = await self.state.update(KEY, add)
        return ModelVersion.model_validate(doc["versions"][model.version])

    async def update(self, version: str, **changes: Any) -> ModelVersion:
        """Record scores, dataset facts or notes on a version (not its status)."""
        if "status" in changes:
            raise ValueError("use promote / reject / rollback to change a status")

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            doc, raw = _find(doc, version)
            updated = ModelVersion.model_validate({**raw, **changes, "updated_at": _now()})
            doc["versions"][version] = updated.model_dump(mode="json")
            return doc

        doc = await self.state.update(KEY, change)
        return ModelVersion.model_validate(doc["versions"][version])

    async def reject(self, version: str, reasons: list[str]) -> ModelVersion:
        """Mark a candidate rejected (the gate said no), with the reasons."""

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            doc, raw = _find(doc, version)
            if raw["status"] == "serving":
                raise RegistryError(f"{version} is serving: roll it back instead of rejecting it")
            raw.update(status="rejected", reasons=[*raw["reasons"], *reasons], updated_at=_now())
            return doc

        doc = await self.state.update(KEY, change)
        return ModelVersion.model_validate(doc["versions"][version])

    async def promote(self, version: str) -> Promotion:
        """Make ``version`` the one its backend serves; the one serving before is retired."""
        before: dict[str, Any] = {}

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            doc, raw = _find(doc, version)
            if raw["status"] == "serving":
                raise RegistryError(f"{version} is already serving")
            backend = raw["backend"]
            before.clear()
            previous = doc["serving"].get(backend)
            if previous:
                doc["versions"][previous].update(status="retired", updated_at=_now())
                before.update(doc["versions"][previous])
            raw.update(status="serving", updated_at=_now())
            doc["serving"][backend] = version
            doc["history"].setdefault(backend, []).append(version)
            return doc

        doc = await self.state.update(KEY, change)
        return Promotion(
            serving=ModelVersion.model_validate(doc["versions"][version]),
            previous=ModelVersion.model_validate(before) if before else None,
        )

    async def rollback(self, backend: str, reason: str) -> Promotion:
        """Serve again the version served before the current one; the current one is rejected
        with ``reason``."""
        current: dict[str, Any] = {}

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            doc = doc or _empty()
            history = doc["history"].get(backend, [])
            if len(history) < 2:
                raise RegistryError(f"{backend}: no earlier version to roll back to")
            bad, restored = history[-1], history[-2]
            reasons = [*doc["versions"][bad]["reasons"], reason]
            doc["versions"][bad].update(status="rejected", updated_at=_now(), reasons=reasons)
            doc["versions"][restored].update(status="serving", updated_at=_now())
            doc["serving"][backend] = restored
            doc["history"][backend] = history[:-1]
            current.clear()
            current.update(doc["versions"][bad])
            return doc

        doc = await self.state.update(KEY, change)
        restored = doc["serving"][backend]
        return Promotion(
            serving=ModelVersion.model_validate(doc["versions"][restored]),
            previous=ModelVersion.model_validate(current),
        )


def _find(doc: dict[str, Any] | None, version: str) -> tuple[dict[str, Any], dict[str, Any]]:
    doc = doc or _empty()
    raw = doc["versions"].get(version)
    if raw is None:
        raise RegistryError(f"no model version {version!r} in the registry")
    return doc, raw
