"""``standby models list | register | promote VERSION | rollback | deploy-command VERSION``: the
model registry by hand.

The registry lives beside the event bus: ``--registry URL`` (a bus URL), else ``registry.url``
or ``capture.bus`` of ``--from-config standby.yaml``, else the default bus
``sqlite:///./.standby/events.db``. Promotion and rollback also publish their events there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from standby.config import CaptureConfig, RegistryConfig, load_section
from standby.store.card import read_card
from standby.store.registry import ModelVersion, Registry
from standby.toolconfig import OneLineParser

T = TypeVar("T")


def register_models(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = subparsers.add_parser("models", help="model registry: list, promote, rollback")
    sub = models.add_subparsers(
        dest="models_command", required=True, metavar="MODELS_COMMAND", parser_class=OneLineParser
    )

    ls = sub.add_parser("list", help="every registered version, its status and judge scores")
    _where(ls)
    ls.add_argument("--backend", help="only this backend's versions")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=cmd_list)

    reg = sub.add_parser("register", help="add an adapter as a candidate version")
    _where(reg)
    reg.add_argument("--version", required=True, help="a new version id")
    reg.add_argument(
        "--adapter", required=True, help="adapter folder (its card's scores come along) or Hub id"
    )
    reg.add_argument("--adapter-revision", help="Hub revision of the adapter")
    reg.add_argument("--backend", default="gemma", help="gateway backend it is for (gemma)")
    reg.add_argument("--base-model", help="the base model it was trained on")
    reg.set_defaults(func=cmd_register)

    pro = sub.add_parser("promote", help="serve VERSION (gateways following it hot-swap)")
    _where(pro)
    pro.add_argument("version")
    pro.set_defaults(func=cmd_promote)

    back = sub.add_parser("rollback", help="serve the version served before the current one")
    _where(back)
    back.add_argument("--backend", default="gemma")
    back.add_argument("--reason", default="rolled back by hand")
    back.set_defaults(func=cmd_rollback)

    from standby.pipeline import deploy_command  # TGI restart / vLLM load, printed

    deploy_command.add_parser(sub, _where, cmd_deploy_command)


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from-config", metavar="FILE", help="standby.yaml to take registry.url / capture.bus from"
    )
    parser.add_argument("--registry", metavar="URL", help="the registry's (bus) URL")


def registry_url(args: argparse.Namespace) -> str:
    if args.registry:
        return str(args.registry)
    if not args.from_config:
        return CaptureConfig().bus
    registry = load_section(args.from_config, "registry", RegistryConfig)
    capture = load_section(args.from_config, "capture", CaptureConfig)
    return registry.url or capture.bus


def _run(args: argparse.Namespace, work: Callable[[Registry, Any], Awaitable[T]]) -> T:
    from standby.store import open_bus, open_state

    url = registry_url(args)

    async def main() -> T:
        async with open_state(url) as state, open_bus(url) as bus:
            return await work(Registry(state), bus)

    return asyncio.run(main())


def _row(v: ModelVersion) -> dict[str, Any]:
    return v.model_dump(mode="json")


def cmd_list(args: argparse.Namespace) -> None:
    async def work(registry: Registry, bus: Any) -> list[ModelVersion]:
        return await registry.versions(args.backend)

    versions = _run(args, work)
    if args.json:
        print(json.dumps([_row(v) for v in versions], indent=2))
        return
    if not versions:
        print("no model versions registered")
        return
    rows = [["version", "backend", "status", "similarity", "precision", "created", "adapter"]]
    for v in versions:
        scores = [v.scores.get(k) for k in ("similarity", "precision")]
        shown = [f"{x:.1f}" if x is not None else "-" for x in scores]
        rows.append([v.version, v.backend, v.status, *shown, v.created_at, v.adapter])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def cmd_register(args: argparse.Namespace) -> None:
    # An adapter folder with a model card brings its judge scores and base model along.
    card = read_card(Path(args.adapter))
    scores = card.scores.criteria() if card is not None and card.scores is not None else {}
    base = card.base_model.id if card is not None and card.base_model is not None else None
    model = ModelVersion(
        version=args.version,
        backend=args.backend,
        adapter=args.adapter,
        adapter_revision=args.adapter_revision,
        base_model=args.base_model or base,
        scores=scores,
    )

    async def work(registry: Registry, bus: Any) -> ModelVersion:
        return await registry.register(model)

    done = _run(args, work)
    said = ", ".join(f"{k} {v:.1f}" for k, v in done.scores.items())
    scored = f"; scores from its card: {said}" if said else ""
    print(f"registered {done.version} ({done.backend}, {done.adapter}) as a candidate{scored}")


def cmd_promote(args: argparse.Namespace) -> None:
    from standby.store.promotion import promote

    async def work(registry: Registry, bus: Any) -> Any:
        return await promote(registry, bus, args.version)

    done = _run(args, work)
    before = f" (was {done.previous.version})" if done.previous else ""
    print(f"{done.serving.backend} now serves {done.serving.version}{before}")


def cmd_rollback(args: argparse.Namespace) -> None:
    from standby.store.promotion import rollback

    async def work(registry: Registry, bus: Any) -> Any:
        return await rollback(registry, bus, args.backend, args.reason)

    done = _run(args, work)
    print(f"{args.backend} serves {done.serving.version} again; {done.previous.version} rejected")


def cmd_deploy_command(args: argparse.Namespace) -> None:
    from standby.pipeline.deploy_command import command

    async def work(registry: Registry, bus: Any) -> ModelVersion:
        return await registry.get(args.version)

    print(command(_run(args, work), args))
