"""``standby pipeline run | once | status``: the event-driven worker, a single pass for cron, and
what the last runs did. Settings: ``--from-config config/pipeline.yaml`` and same-named flags."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import TYPE_CHECKING, Any

from standby.toolconfig import OneLineParser, add_tool_command

if TYPE_CHECKING:
    from standby.pipeline.config import PipelineConfig


def register_pipeline(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from standby.pipeline.config import PipelineConfig

    pipeline = subparsers.add_parser("pipeline", help="retrain, judge and promote the fallback")
    sub = pipeline.add_subparsers(
        dest="pipeline_command", required=True, metavar="COMMAND", parser_class=OneLineParser
    )
    add_tool_command(
        sub,
        "run",
        PipelineConfig,
        cmd_run,
        json_help=None,
        help="long-running worker: materialize, run when due, resume",
    )
    once = add_tool_command(
        sub,
        "once",
        PipelineConfig,
        cmd_once,
        json_help="print the run as JSON",
        help="one pass (for cron): resume a run or start one if due",
    )
    once.add_argument("--force", action="store_true", help="start a run even if not due")
    add_tool_command(
        sub, "status", PipelineConfig, cmd_status, help="the current run and the last ones"
    )


def cmd_run(config: PipelineConfig, args: argparse.Namespace) -> None:
    from standby.pipeline.controller import Controller

    controller = Controller(config)
    if config.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(
            config.metrics_port, addr=config.metrics_host, registry=controller.metrics.registry
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await controller.run_forever(stop)

    asyncio.run(main())


def cmd_once(config: PipelineConfig, args: argparse.Namespace) -> None:
    from standby.pipeline.controller import Controller
    from standby.store import open_state

    controller = Controller(config)

    async def main() -> dict[str, Any] | None:
        async with open_state(config.bus) as state:
            return await controller.once(state, force=args.force)

    run = asyncio.run(main())
    if args.json:
        print(json.dumps(run, indent=2))
    elif run is None:
        print(f"nothing to do: {controller.idle_reason or 'no run'}")
    else:
        print(_describe(run))


def cmd_status(config: PipelineConfig, args: argparse.Namespace) -> None:
    from standby.pipeline.controller import HISTORY_KEY, RUN_KEY
    from standby.pipeline.lease import KEY as LEASE_KEY
    from standby.store import open_state

    async def main() -> dict[str, Any]:
        async with open_state(config.bus) as state:
            return {
                "run": await state.get(RUN_KEY),
                "lease": await state.get(LEASE_KEY),
                "history": await state.get(HISTORY_KEY) or [],
            }

    got = asyncio.run(main())
    if args.json:
        print(json.dumps(got, indent=2))
        return
    print(_describe(got["run"]) if got["run"] else "no run yet")
    if got["lease"]:
        print(f"lease: {got['lease']['holder']}")
    for past in got["history"][-10:]:
        print(
            f"  {past['id']}: {past['status']} at {past['stage']}"
            f" {past.get('decision') or past.get('error') or ''}".rstrip()
        )


def _describe(run: dict[str, Any]) -> str:
    stages = ", ".join(f"{k} {v['outcome']}" for k, v in run["stages"].items())
    detail = run.get("decision") or run.get("error") or ""
    return (
        f"run {run['id']}: {run['status']} at {run['stage']}"
        f"{' (' + detail + ')' if detail else ''}; stages: {stages or 'none'}"
    )
