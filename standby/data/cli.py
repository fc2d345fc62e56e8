"""``standby data ...``: materialize, stats, snapshot, export, purge.

Every command takes ``--from-config FILE`` (a standby.yaml: its ``data:`` section and
``capture.bus``) and flags named after those YAML keys (``--test-fraction``, ``--bus``), which
win over the file. Without a file the defaults apply: pairs in ``.standby/pairs.db``, the bus in
``.standby/events.db`` (where ``standby demo`` and a default gateway capture to).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from standby.config import CaptureConfig, DataConfig, ResponsesConfig, load_section
from standby.data.merge import register_merge
from standby.data.pairs import SPLITS, DataError, PairStore, Stats, store_path
from standby.errors import ConfigError, first_problem
from standby.store.urls import safe_url
from standby.toolconfig import OneLineParser

_TYPES = {"store": str, "test_fraction": float, "batch_size": int, "block_s": float}
_FILTERS = ("min_prompt_chars", "max_prompt_chars", "min_response_chars", "max_response_chars")
_WRITE_KEYS = ("test_fraction", *_FILTERS, "batch_size", "block_s")


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[OneLineParser]:
    """Add ``standby data`` and its sub-commands to the ``standby`` parser; return the data
    sub-parsers, where more data commands (``merge``) can be added."""
    data = subparsers.add_parser("data", help="training pairs: materialize, stats, export")
    sub = data.add_subparsers(
        dest="data_command", required=True, metavar="DATA_COMMAND", parser_class=OneLineParser
    )

    mat = sub.add_parser("materialize", help="turn inference.completed events into pairs")
    _config_flags(mat, ("store", "bus", *_WRITE_KEYS))
    mat.add_argument("--once", action="store_true", help="drain the events there are, then exit")
    mat.add_argument("--json", action="store_true", help="print the counts as JSON")
    mat.set_defaults(func=cmd_materialize)

    stats = sub.add_parser("stats", help="pairs by route, source and split; new since snapshot")
    _config_flags(stats, ("store",))
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(func=cmd_stats)

    snap = sub.add_parser("snapshot", help="record a snapshot, publish dataset.snapshot_created")
    _config_flags(snap, ("store", "bus"))
    snap.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    snap.set_defaults(func=cmd_snapshot)

    exp = sub.add_parser("export", help="write pairs as jsonl, parquet or a datasets folder")
    _config_flags(exp, ("store",))
    exp.add_argument("--format", required=True, choices=["jsonl", "parquet", "hf"])
    exp.add_argument("--output", help="folder (or .jsonl/.parquet file for one split)")
    exp.add_argument("--split", default="all", choices=[*SPLITS, "all"])
    exp.add_argument("--push-to-hub", metavar="REPO", help="also push to this Hub dataset repo")
    exp.add_argument("--private", action="store_true", help="create the Hub repo private")
    exp.add_argument("--hub-endpoint", metavar="URL", help="Hub API URL (default: HF_ENDPOINT)")
    exp.set_defaults(func=cmd_export)
    purge = sub.add_parser(
        "purge",
        help="delete captured pairs, their bus events and stored responses: before a date, "
        "by key id",
    )
    _config_flags(purge, ("store", "bus"))
    purge.add_argument(
        "--before",
        metavar="DATE",
        type=_date,
        help="captured before this date (YYYY-MM-DD or ISO 8601; UTC if naive)",
    )
    purge.add_argument(
        "--key-id",
        metavar="ID",
        type=_key_id,
        help="sent with this gateway key id (16 hex digits, as logged)",
    )
    purge.add_argument("--json", action="store_true", help="print the counts as JSON")
    purge.set_defaults(func=cmd_purge)
    register_merge(sub)
    return sub


def _date(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (YYYY-MM-DD or ISO 8601)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _key_id(text: str) -> str:
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        raise argparse.ArgumentTypeError("a key id is 16 lowercase hex digits (as logged)")
    return text


def cmd_purge(args: argparse.Namespace) -> None:
    """Bus first (it names the events of a key id), then the pairs made from them, then the
    Responses API's stored responses (``responses.url``, default the bus)."""
    from standby.data.materializer import TOPIC
    from standby.store import open_bus, open_responses

    if args.before is None and args.key_id is None:
        raise ConfigError("standby data purge: give --before DATE, --key-id ID or both")
    data, bus_url = resolve(args)
    kept = ResponsesConfig()
    if args.from_config:
        kept = load_section(args.from_config, "responses", ResponsesConfig)
    responses_url = kept.url or bus_url

    async def run() -> tuple[list[str], int]:
        async with open_bus(bus_url) as bus:
            events = await bus.purge(TOPIC, before=args.before, key_id=args.key_id)
        async with open_responses(
            responses_url, retention_s=kept.retention_s, max_stored=kept.max_stored
        ) as responses:
            return events, await responses.purge(before=args.before, key_id=args.key_id)

    events, responses = asyncio.run(run())
    with PairStore.from_config(data) as store:
        ids = events if args.key_id is not None else None
        pairs = store.purge(before=args.before, event_ids=ids)
    if args.json:
        _print_json({"pairs": pairs, "events": len(events), "responses": responses})
    else:
        print(
            f"purged {pairs} pairs from {store.path}, {len(events)} captured events"
            f" from {safe_url(bus_url)} and {responses} stored responses from"
            f" {safe_url(responses_url)}"
        )


def _config_flags(parser: argparse.ArgumentParser, keys: tuple[str, ...]) -> None:
    parser.add_argument(
        "--from-config", metavar="FILE", help="standby.yaml to read data: and capture.bus from"
    )
    for key in keys:
        if key == "bus":
            parser.add_argument("--bus", metavar="URL", help="override capture.bus")
            continue
        field = DataConfig.model_fields[key]
        parser.add_argument(
            f"--{key.replace('_', '-')}",
            dest=key,
            type=_TYPES.get(key, int),
            metavar=key.upper(),
            help=f"data.{key}: {field.description}",
        )


def resolve(args: argparse.Namespace) -> tuple[DataConfig, str]:
    """The data section and bus URL: defaults, then the file, then flags."""
    if args.from_config:
        data = load_section(args.from_config, "data", DataConfig)
        bus = load_section(args.from_config, "capture", CaptureConfig).bus
    else:
        data, bus = DataConfig(), CaptureConfig().bus
    flags = {k: v for k in DataConfig.model_fields if (v := getattr(args, k, None)) is not None}
    if flags:
        try:
            data = DataConfig.model_validate({**data.model_dump(), **flags})
        except ValidationError as e:
            problem = first_problem(e)
            flag = f"--{problem.loc.replace('_', '-')}: " if problem.loc else ""
            raise ConfigError(f"{flag}{problem.msg}") from None
    return data, getattr(args, "bus", None) or bus


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def cmd_materialize(args: argparse.Namespace) -> None:
    from standby.data.materializer import Materializer
    from standby.store import open_bus

    data, bus_url = resolve(args)

    async def run() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with PairStore.from_config(data) as store:
            async with open_bus(bus_url) as bus:
                counts = await Materializer(bus, store).run(once=args.once, stop=stop)
        return counts.to_json() | {"summary": counts.summary()}

    result = asyncio.run(run())
    if args.json:
        _print_json({k: v for k, v in result.items() if k != "summary"})
    else:
        print(f"materialized {result['summary']}")


def cmd_stats(args: argparse.Namespace) -> None:
    data, _ = resolve(args)
    if store_path(data.store).exists():
        with PairStore.from_config(data) as store:
            stats = store.stats()
    else:  # looking creates nothing
        stats = Stats.empty()
    if args.json:
        _print_json(stats.to_json())
    else:
        print(format_stats(stats))


def cmd_snapshot(args: argparse.Namespace) -> None:
    from standby.data.materializer import take_snapshot
    from standby.store import open_bus

    data, bus_url = resolve(args)

    async def run() -> dict[str, Any]:
        with PairStore.from_config(data) as store:
            async with open_bus(bus_url) as bus:
                return (await take_snapshot(store, bus)).to_json()

    snap = asyncio.run(run())
    if args.json:
        _print_json(snap)
    else:
        counts = ", ".join(f"{k} {v}" for k, v in snap["counts"].items())
        print(f"snapshot {snap['snapshot_id']}: {counts}; content hash {snap['content_hash']}")


def cmd_export(args: argparse.Namespace) -> None:
    if not args.output and not args.push_to_hub:
        raise ConfigError("standby data export: give --output PATH, --push-to-hub REPO or both")
    from standby.data.export import export, push_to_hub

    data, _ = resolve(args)
    path = store_path(data.store)
    if not path.exists():
        raise DataError(
            f"no pair store at {path}: nothing to export (standby data materialize makes it)"
        )
    with PairStore.from_config(data) as store:
        if args.output:
            done = export(store, args.format, args.output, split=args.split)
            paths = ", ".join(str(p) for p in done.paths)
            print(f"exported {_counts(done.counts)} to {paths} (content hash {done.content_hash})")
        if args.push_to_hub:
            pushed = push_to_hub(
                store,
                args.push_to_hub,
                split=args.split,
                private=args.private,
                endpoint=args.hub_endpoint,
            )
            print(f"pushed {_counts(pushed.counts)} to {pushed.repo_url} ({pushed.commit_url})")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{split} {n}" for split, n in counts.items())


def format_stats(stats: Stats) -> str:
    """A small table of pairs by route and source per split, then snapshot and event counts."""
    table: dict[tuple[str, str], dict[str, int]] = {}
    for route, source, split, n in stats.rows:
        table.setdefault((route, source), dict.fromkeys(SPLITS, 0))[split] = n
    lines: list[list[str]] = [["route", "source", *SPLITS, "total"]]
    for (route, source), by_split in sorted(table.items()):
        counts = [by_split[s] for s in SPLITS]
        lines.append([route, source, *map(str, counts), str(sum(counts))])
    lines.append(["all", "", *(str(stats.by_split[s]) for s in SPLITS), str(stats.total)])
    widths = [max(len(cell) for cell in column) for column in zip(*lines, strict=True)]
    out = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in lines
    ]
    snap = stats.last_snapshot
    last = f"{snap.id} at {snap.created_at} ({snap.content_hash[:12]})" if snap else "none"
    out += [
        "",
        f"new since last snapshot: {stats.new_since_snapshot}"
        f" (updated answers: {stats.updated_since_snapshot}); last snapshot: {last}",
        "events: " + _event_counts(stats.counters),
    ]
    return "\n".join(out)


def _event_counts(c: dict[str, int]) -> str:
    text = (
        f"written {c.get('written', 0)}, duplicate {c.get('duplicate', 0)}"
        f" (replaced {c.get('replaced', 0)})"
    )
    for kind in ("skipped", "rejected"):
        reasons = {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith(f"{kind}.")}
        detail = ", ".join(f"{k} {v}" for k, v in reasons.items())
        text += f", {kind} {sum(reasons.values())}" + (f" ({detail})" if detail else "")
    return text
