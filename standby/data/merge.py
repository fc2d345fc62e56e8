"""``standby data merge`` (the original dataset_merge tool): two datasets into one, in the
no_robots schema (``prompt, prompt_id, messages, category``) with every provenance column of
either input kept (``source``, ``generator``, ``seed_ids``...) and ``merged_from`` added.

The test split is stable: it is exactly the union of the inputs' test splits, never re-drawn,
so a prompt held out before the merge is held out after it. A train row whose prompt is in the
merged test split is dropped (no leakage), and a prompt seen twice keeps its first row (the
first dataset wins). Output: ``{split}.jsonl`` files in ``--output-dir`` (what ``standby train
--train-ds-id`` reads) and, with ``--result-ds-id``, a push to that Hub dataset repo (each
split appended or replaced as its flag says).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field

from standby.data.pairs import DataError, prompt_id_of
from standby.toolconfig import ToolConfig, add_tool_command

log = logging.getLogger("standby.data")
CORE = ("prompt", "prompt_id", "messages", "category")


class MergeConfig(ToolConfig):
    """Settings of ``standby data merge`` (the original flag names)."""

    first_ds_id: str = Field(description="First dataset: Hub id, local file/folder, or sqlite:///")
    first_ds_train_split: str = Field(default="train_sft", description="Its train split")
    first_ds_test_split: str = Field(
        default="test_sft", description="Its test split ('' for none; a missing one is skipped)"
    )
    second_ds_id: str = Field(description="Second dataset (e.g. standby synth's output folder)")
    second_ds_train_split: str = Field(default="train_sft", description="Its train split")
    second_ds_test_split: str = Field(
        default="test_sft", description="Its test split ('' for none; a missing one is skipped)"
    )
    output_dir: Path = Field(
        default=Path(".standby/merged"), description="Where the merged {split}.jsonl files go"
    )
    result_ds_id: str | None = Field(default=None, description="Hub dataset repo to push to")
    result_ds_train_split: str = Field(default="train_sft", description="Merged train split")
    result_ds_test_split: str = Field(default="test_sft", description="Merged test split")
    result_ds_train_append: bool = Field(
        default=False, description="Add to the Hub train split instead of replacing it"
    )
    result_ds_test_append: bool = Field(
        default=False, description="Add to the Hub test split instead of replacing it"
    )
    hub_endpoint: str | None = Field(
        default=None, description="Hub URL (default: $HF_ENDPOINT or huggingface.co)"
    )
    hub_private: bool = Field(default=True, description="Create a pushed repo as private")


@dataclass(frozen=True)
class MergeResult:
    counts: dict[str, int]
    dropped: dict[str, int]
    paths: dict[str, Path]
    pushed: dict[str, str]


def _rows(source: str, split: str, *, required: bool) -> list[dict[str, Any]]:
    from standby.data.sources import load_split, require_columns

    if not split:
        return []
    try:
        loaded = load_split(source, split)
    except DataError as e:
        if required:
            raise
        log.warning("merge: no test split %r in %s, none taken (%s)", split, source, e)
        return []
    if loaded.rows == 0:
        return []
    require_columns(loaded.dataset, ("messages",), f"{source} [{split}]")
    return [dict(row) for row in loaded.dataset]


def _normalised(row: dict[str, Any], origin: str) -> dict[str, Any] | None:
    from standby.data.sources import instruction_and_target

    try:
        prompt, _ = instruction_and_target(row["messages"] or [])
    except DataError:
        return None
    out = {
        "prompt": row.get("prompt") or prompt,
        "prompt_id": row.get("prompt_id") or prompt_id_of(prompt),
        "messages": [_message(m) for m in row["messages"]],
        "category": row.get("category") or "",
    }
    out.update({k: v for k, v in row.items() if k not in out})
    out["merged_from"] = origin
    return out


def _message(m: dict[str, Any]) -> dict[str, Any]:
    """A turn's role and content, and a tool pair's calls and result fields where it has them
    (``data/tool_pairs.py``)."""
    out = {"role": m["role"], "content": m["content"]}
    out.update({k: m[k] for k in ("tool_calls", "tool_call_id", "name") if m.get(k) is not None})
    return out


def _blank(value: Any) -> Any:
    """The fill for a column a row lacks, typed like the column's values elsewhere."""
    if isinstance(value, list):
        return []
    if isinstance(value, str):
        return ""
    return None


def merge_rows(
    tests: Iterable[tuple[str, list[dict[str, Any]]]],
    trains: Iterable[tuple[str, list[dict[str, Any]]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """(train, test, dropped counts) from (origin, rows) lists, test first (see module doc)."""
    dropped = {"duplicate": 0, "in_test": 0, "unusable": 0}
    seen: set[str] = set()
    in_test: set[str] = set()
    merged: dict[str, list[dict[str, Any]]] = {"test": [], "train": []}
    for part, groups in (("test", tests), ("train", trains)):
        for origin, rows in groups:
            for row in rows:
                norm = _normalised(row, origin)
                if norm is None:
                    dropped["unusable"] += 1
                    continue
                key = prompt_id_of(norm["prompt"])
                if key in seen:
                    dropped["in_test" if part == "train" and key in in_test else "duplicate"] += 1
                    continue
                seen.add(key)
                if part == "test":
                    in_test.add(key)
                merged[part].append(norm)
    columns: dict[str, Any] = {}
    for row in (*merged["test"], *merged["train"]):
        for k, v in row.items():
            if columns.get(k) is None:
                columns[k] = v
    for rows in merged.values():
        for row in rows:
            for k, v in columns.items():
                row.setdefault(k, _blank(v))
    return merged["train"], merged["test"], dropped


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    os.replace(tmp, path)


def run_merge(cfg: MergeConfig) -> MergeResult:
    """Merge, write the files, push when asked; see the module doc."""
    first, second = cfg.first_ds_id, cfg.second_ds_id
    tests = [
        (first, _rows(first, cfg.first_ds_test_split, required=False)),
        (second, _rows(second, cfg.second_ds_test_split, required=False)),
    ]
    trains = [
        (first, _rows(first, cfg.first_ds_train_split, required=True)),
        (second, _rows(second, cfg.second_ds_train_split, required=True)),
    ]
    train, test, dropped = merge_rows(tests, trains)
    splits = {cfg.result_ds_train_split: train, cfg.result_ds_test_split: test}
    paths = {name: cfg.output_dir / f"{name}.jsonl" for name in splits}
    for name, rows in splits.items():
        _write(paths[name], rows)
    pushed: dict[str, str] = {}
    if cfg.result_ds_id:
        import datasets  # type: ignore[import-untyped]

        from standby.data.hub import push_split

        appends = {
            cfg.result_ds_train_split: cfg.result_ds_train_append,
            cfg.result_ds_test_split: cfg.result_ds_test_append,
        }
        for name, rows in splits.items():
            if not rows:
                continue
            done = push_split(
                datasets.Dataset.from_list(rows),
                cfg.result_ds_id,
                name,
                append=appends[name],
                private=cfg.hub_private,
                endpoint=cfg.hub_endpoint,
                description=f"Merged by `standby data merge` from {first} and {second}.",
            )
            pushed[name] = done.commit_url
    counts = {name: len(rows) for name, rows in splits.items()}
    return MergeResult(counts, dropped, paths, pushed)


def register_merge(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``merge`` to ``standby data``."""
    add_tool_command(
        sub,
        "merge",
        MergeConfig,
        cmd_merge,
        help="merge two datasets (stable test split, provenance)",
    )


def cmd_merge(cfg: MergeConfig, args: argparse.Namespace) -> None:
    result = run_merge(cfg)
    data = {
        "counts": result.counts,
        "dropped": result.dropped,
        "paths": {k: str(v) for k, v in result.paths.items()},
        "pushed": result.pushed,
    }
    if args.json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    drops = ", ".join(f"{k} {v}" for k, v in result.dropped.items())
    where = ", ".join(str(p) for p in result.paths.values())
    print(
        f"merged {counts} into {where} (dropped: {drops})"
        + (f"; pushed {', '.join(result.pushed.values())}" if result.pushed else "")
    )
