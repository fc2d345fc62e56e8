"""The new rows: no_robots schema plus provenance, saved as ``{split}.jsonl`` in the output
folder (appended to or replaced), optionally pushed to a Hub dataset repo, and announced with a
``dataset.snapshot_created`` event in the shape the pair store's snapshots use."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from standby.data.pairs import prompt_id_of
from standby.synth.validate import Item

SOURCE = "synthetic"
EVENT_SOURCE = "standby/synth"
PROVENANCE = ("source", "generator", "seed_ids", "seed_prompt", "topic", "created_at", "run_id")


def row_of(
    item: Item, *, generator: str, topic: str | None, created_at: str, run_id: str, mode: str
) -> dict[str, Any]:
    """One output row. ``seed_prompt`` is the first seed's instruction, ``seed_ids`` every
    seed's prompt id; ``topic`` is "" when none was asked for (a stable column type)."""
    return {
        "prompt": item.instruction,
        "prompt_id": prompt_id_of(item.instruction),
        "messages": [
            {"role": "user", "content": item.instruction},
            {"role": "assistant", "content": item.response},
        ],
        "category": next((s.category for s in item.seeds if s.category), ""),
        "source": SOURCE,
        "generator": generator,
        "seed_ids": [s.prompt_id for s in item.seeds],
        "seed_prompt": item.seeds[0].instruction if item.seeds else "",
        "topic": topic or "",
        "created_at": created_at,
        "run_id": run_id,
        "synth_mode": mode,
    }


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """All rows at once, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        for row in rows:
            f.write(orjson.dumps(row) + b"\n")
    os.replace(tmp, path)


def features() -> Any:
    """The column types, fixed so that every pushed shard (even an empty one) has the same."""
    import datasets  # type: ignore[import-untyped]

    text = datasets.Value("string")
    return datasets.Features(
        {
            "prompt": text,
            "prompt_id": text,
            "messages": datasets.List({"role": text, "content": text}),
            "category": text,
            **{name: text for name in PROVENANCE if name != "seed_ids"},
            "seed_ids": datasets.List(text),
            "synth_mode": text,
        }
    )


def dataset_of(rows: Sequence[dict[str, Any]]) -> Any:
    """The rows as a ``datasets.Dataset`` with the fixed column types (none is fine too)."""
    import datasets

    feats = features()
    if not rows:
        return datasets.Dataset.from_dict({name: [] for name in feats}, features=feats)
    return datasets.Dataset.from_list(list(rows), features=feats)


def push(
    rows: Sequence[dict[str, Any]],
    repo: str,
    split: str,
    *,
    append: bool,
    private: bool,
    endpoint: str | None,
) -> str | None:
    """Commit the new rows to the Hub (a new shard, or the split's only one); the commit URL,
    or None when there is nothing to append."""
    from standby.data.hub import push_split

    if append and not rows:
        return None
    done = push_split(
        dataset_of(rows),
        repo,
        split,
        append=append,
        private=private,
        endpoint=endpoint,
        description="Synthetic training pairs written by `standby synth` (provenance columns: "
        + ", ".join(PROVENANCE)
        + ").",
    )
    return done.commit_url


async def publish_snapshot(bus_url: str, data: dict[str, Any]) -> str:
    """Publish ``dataset.snapshot_created``; the event id."""
    from standby.data.materializer import SNAPSHOT_TOPIC
    from standby.store import PipelineEvent, open_bus

    event = PipelineEvent(type="dataset.snapshot_created", source=EVENT_SOURCE, data=data)
    async with open_bus(bus_url) as bus:
        await bus.publish(SNAPSHOT_TOPIC, event)
    return event.id
