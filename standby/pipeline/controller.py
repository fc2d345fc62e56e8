"""The pipeline worker: watches the pair store grow and, when enough new pairs came in and
enough time passed, runs snapshot -> train -> batch inference -> judge -> gate -> promote.

The run is a persisted state machine (``pipeline:run`` in the state store beside the bus): each
finished stage is recorded with its result before the next one starts, so a worker that
crashes resumes the run at the stage it was in. A lease makes sure one worker at a time works,
however many run (SQLite or Redis). Every stage counts ``standby_pipeline_runs_total{stage,
outcome}`` and publishes its event (``dataset.snapshot_created``, ``training.completed``,
``evaluation.completed``, ``model.promoted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from standby.config import DataConfig
from standby.errors import StandbyError
from standby.pipeline import stages
from standby.pipeline.config import PipelineConfig
from standby.pipeline.lease import Lease, LeaseLost, worker_id
from standby.store import open_bus, open_state
from standby.store.promotion import promote
from standby.store.registry import Registry
from standby.store.state import StateStore, Update

log = logging.getLogger("standby.pipeline")
T = TypeVar("T")

RUN_KEY = "pipeline:run"
HISTORY_KEY = "pipeline:history"
HISTORY = 50

STAGE_FUNCTIONS: dict[str, Callable[[stages.RunContext], dict[str, Any]]] = {
    "snapshot": stages.snapshot,
    "train": stages.train,
    "batch_infer": stages.batch_infer,
    "evaluate": stages.evaluate,
    "gate": stages.gate,
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


class PipelineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.runs = Counter(
            "standby_pipeline_runs",
            "Pipeline stages run, by stage and outcome.",
            ["stage", "outcome"],
            registry=self.registry,
        )
        self.online_score = Gauge(
            "standby_fallback_online_score",
            "Running mean judge score (1-100) of the serving fallback's production answers.",
            ["criterion"],
            registry=self.registry,
        )
        self.online_samples = Gauge(
            "standby_fallback_online_samples",
            "Judged answers in that running mean.",
            registry=self.registry,
        )


class Controller:
    def __init__(self, config: PipelineConfig, metrics: PipelineMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or PipelineMetrics()
        self.holder = worker_id()
        self.idle_reason: str | None = None  # why the last once() worked on no run
        self.state: StateStore | None = None
        self.stopping = asyncio.Event()  # set: leave the run where it is (it resumes later)
        self._materializing = False  # run_forever materializes in the background

    # -- the worker loop -----------------------------------------------------------------------

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Until ``stop``: materialize events into pairs (if configured), and whenever this
        worker holds the lease, resume or start runs."""
        self.stopping = stop
        async with open_state(self.config.bus) as state:
            self.state = state
            self._materializing = self.config.materialize
            background = []
            if self.config.materialize:
                background.append(asyncio.create_task(self._materialize(stop)))
            if self.config.online_check:
                background.append(asyncio.create_task(self._online(state, stop)))
            try:
                while not stop.is_set():
                    await self.once(state, start_new=True)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.config.poll_s)
            finally:
                stop.set()
                await asyncio.gather(*background, return_exceptions=True)

    async def _online(self, state: StateStore, stop: asyncio.Event) -> None:
        from standby.pipeline.online import OnlineCheck

        try:
            async with open_bus(self.config.bus) as bus:
                await OnlineCheck(self.config, state, bus, self.metrics).run(stop)
        except Exception as e:  # a judge that cannot be set up must not stop the pipeline
            first = str(e).splitlines()[0] if str(e) else ""
            log.error("online check is off: %s: %s", type(e).__name__, first)

    async def _materialize(self, stop: asyncio.Event | None = None) -> None:
        """Turn captured answers into pairs: until ``stop``, or (None) what is there now."""
        from standby.data.materializer import Materializer
        from standby.data.pairs import PairStore

        with PairStore.from_config(DataConfig(store=self.config.store)) as store:
            async with open_bus(self.config.bus) as bus:
                await Materializer(bus, store).run(once=stop is None, stop=stop)

    async def once(
        self, state: StateStore, *, start_new: bool = True, force: bool = False
    ) -> dict[str, Any] | None:
        """Take the lease if free; resume an unfinished run or (``start_new``) start one when
        due (``force``: regardless of the thresholds). Returns the run worked on, if any."""
        lease = Lease(state, self.holder, self.config.lease_ttl_s)
        self.idle_reason = None
        if not await lease.acquire():
            self.idle_reason = lease.held_by_other()
            return None
        lease.keep_renewed()
        try:
            if self.config.materialize and start_new and not self._materializing:
                await self._materialize()  # a cron pass: the pairs captured since the last one
            run = await state.get(RUN_KEY)
            if run is None or run["status"] != "running":
                if not start_new:
                    self.idle_reason = "no unfinished run to resume"
                    return None
                if not force and (why := await self._not_due(run)) is not None:
                    self.idle_reason = why
                    return None
                run = await self._start(state)
            else:
                log.info("pipeline: resuming run %s at stage %s", run["id"], run["stage"])
                run = await state.update(RUN_KEY, _merge(attempts=run["attempts"] + 1))
            return await self._work(state, run, lease)
        except LeaseLost as e:
            log.warning("pipeline: run left where it was: %s", e)
            self.idle_reason = f"the run was left where it was: {e}"
            return None
        finally:
            await lease.stop_renewing()
            await lease.release()

    async def _not_due(self, last: dict[str, Any] | None) -> str | None:
        """Why no run starts now (None: one is due)."""
        if last is not None:
            elapsed = time.time() - last["started_ts"]
            if elapsed < self.config.min_interval_s:
                return (
                    f"not due: the last run started {elapsed:.0f}s ago and min_interval_s is "
                    f"{self.config.min_interval_s:g} (next in "
                    f"{self.config.min_interval_s - elapsed:.0f}s, or --force)"
                )
        from standby.data.pairs import PairStore

        def changed() -> int:
            with PairStore.from_config(DataConfig(store=self.config.store)) as store:
                s = store.stats()
                return s.new_since_snapshot + s.updated_since_snapshot

        new = await asyncio.to_thread(changed)
        if new < self.config.min_new_pairs:
            return (
                f"not due: {new} new or changed pairs since the last snapshot, "
                f"min_new_pairs is {self.config.min_new_pairs} (or --force)"
            )
        return None

    async def _start(self, state: StateStore) -> dict[str, Any]:
        registry = Registry(state)
        serving = await registry.serving(self.config.backend)
        run = {
            "id": new_run_id(),
            "status": "running",
            "stage": stages.STAGES[0],
            "started_at": _now(),
            "started_ts": time.time(),
            "attempts": 1,
            "serving_at_start": serving.version if serving else None,
            "stages": {},
            "holder": self.holder,
        }
        log.info("pipeline: starting run %s", run["id"])
        started: dict[str, Any] = await state.update(RUN_KEY, lambda _: run)
        return started

    # -- one run -------------------------------------------------------------------------------

    async def _work(self, state: StateStore, run: dict[str, Any], lease: Lease) -> dict[str, Any]:
        registry = Registry(state)
        serving = None
        if run.get("serving_at_start"):
            with contextlib.suppress(StandbyError):
                serving = await registry.get(run["serving_at_start"])
        folder = self.config.work_dir / "runs" / run["id"]
        folder.mkdir(parents=True, exist_ok=True)
        results = {name: s["result"] for name, s in run["stages"].items()}
        ctx = stages.RunContext(self.config, run["id"], folder, results, serving)
        for stage in stages.STAGES[stages.STAGES.index(run["stage"]) :]:
            if lease.lost.is_set():
                raise LeaseLost("lease lost during the run")
            await state.update(RUN_KEY, _merge(stage=stage))
            try:
                outcome, result = await self._stage(stage, ctx, registry, lease)
            except LeaseLost:
                raise
            except Exception as e:  # a failed stage ends the run; the error is recorded
                reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                log.error("pipeline: run %s failed at %s: %s", run["id"], stage, reason)
                self.metrics.runs.labels(stage, "failed").inc()
                return await self._finish(state, "failed", stage, error=reason)
            results[stage] = result
            self.metrics.runs.labels(stage, outcome).inc()
            await state.update(RUN_KEY, _stage_done(stage, outcome, result))
        final = results["promote"]["decision"]
        return await self._finish(state, "done", "promote", decision=final)

    async def _stage(
        self, stage: str, ctx: stages.RunContext, registry: Registry, lease: Lease
    ) -> tuple[str, dict[str, Any]]:
        log.info("pipeline: run %s: %s", ctx.run_id, stage)
        if stage == "promote":
            return await self._promote(ctx, registry)
        work: asyncio.Future[Any] = _in_daemon_thread(STAGE_FUNCTIONS[stage], ctx)
        lost: asyncio.Future[Any] = asyncio.ensure_future(lease.lost.wait())
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
        done, _ = await asyncio.wait({work, lost, stopping}, return_when=asyncio.FIRST_COMPLETED)
        lost.cancel()
        stopping.cancel()
        if work not in done:  # the stage's thread is a daemon: it dies with the process
            raise LeaseLost(
                f"{'stopping' if self.stopping.is_set() else 'lease lost'} "
                f"during {stage}: the run resumes there"
            )
        result = work.result()
        outcome = "ok"
        if stage == "gate":
            outcome = "passed" if result["passed"] else "rejected"
        return outcome, result

    async def _promote(
        self, ctx: stages.RunContext, registry: Registry
    ) -> tuple[str, dict[str, Any]]:
        candidate = await stages.register(ctx, registry)
        gate = ctx.results["gate"]
        if not gate["passed"]:
            if candidate.status == "candidate":
                await registry.reject(candidate.version, gate["reasons"])
            return "rejected", {
                "version": candidate.version,
                "decision": "rejected",
                "reasons": gate["reasons"],
            }
        if not self.config.auto_promote:
            return "held", {"version": candidate.version, "decision": "candidate"}
        if candidate.status != "serving":
            async with open_bus(self.config.bus) as bus:
                await promote(registry, bus, candidate.version)
        return "promoted", {"version": candidate.version, "decision": "promoted"}

    async def _finish(
        self, state: StateStore, status: str, stage: str, **extra: Any
    ) -> dict[str, Any]:
        run: dict[str, Any] = await state.update(
            RUN_KEY, _merge(status=status, stage=stage, finished_at=_now(), **extra)
        )
        summary = {
            k: run.get(k)
            for k in (
                "id",
                "status",
                "stage",
                "started_at",
                "finished_at",
                "decision",
                "error",
                "attempts",
            )
        }
        await state.update(HISTORY_KEY, lambda h: [*(h or [])[-(HISTORY - 1) :], summary])
        log.info("pipeline: run %s %s at %s", run["id"], status, stage)
        return run


def _in_daemon_thread(fn: Callable[[Any], T], arg: Any) -> asyncio.Future[T]:
    """Run ``fn(arg)`` in a daemon thread: a worker told to stop leaves a long stage (training)
    behind and exits; the run resumes from that stage's checkpoint on the next start."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        try:
            value = fn(arg)
        except BaseException as e:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, False, e)
        else:
            loop.call_soon_threadsafe(settle, True, value)

    threading.Thread(target=target, name="standby-pipeline-stage", daemon=True).start()
    return future


def _merge(**changes: Any) -> Update:
    return lambda run: {**run, **changes}


def _stage_done(stage: str, outcome: str, result: dict[str, Any]) -> Update:
    done = {"outcome": outcome, "result": result, "finished_at": _now()}
    return lambda run: {**run, "stages": {**run["stages"], stage: done}}
